"""One coalesced poller per connection per triggerer: every waiting job read in one request.

However many Doitong triggers wait in a triggerer process, each connection gets one poller, which
reads all their jobs with one aliased GraphQL request per interval, paced by the plan's
``X-RateLimit-*`` headers. Status requests per minute then depend on the interval, not on the
number of waiting tasks. A trigger that leaves (done or cancelled) unregisters; the last one out
stops the poller and closes its client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from airflow_provider_doitong.client import AsyncDoitongClient, DoitongError, DoitongNotFound, Job
from airflow_provider_doitong.client.retry import RetryPolicy, backoff

log = logging.getLogger(__name__)

#: Share of the rate-limit window's remaining requests the poller may use; the rest is left for
#: submissions from workers on the same account.
STATUS_SHARE = 0.5


@dataclass
class _Watcher:
    poll_interval: float
    queue: asyncio.Queue[Job | None | BaseException] = field(default_factory=asyncio.Queue)
    last_status: str | None = None


class JobPoller:
    """Polls every registered job of one connection in coalesced requests.

    :param key: the registry key (connection id).
    :param client_factory: makes the one async client the poller keeps for its life.
    :param max_consecutive_errors: failed polls in a row after which every watcher gets the error.
    :param retry_policy: backoff between failed polls.
    """

    def __init__(
        self,
        *,
        key: str,
        client_factory: Callable[[], Awaitable[AsyncDoitongClient]],
        max_consecutive_errors: int = 5,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.key = key
        self._client_factory = client_factory
        self._client: AsyncDoitongClient | None = None
        self._watchers: dict[str, list[_Watcher]] = {}
        self._task: asyncio.Task[None] | None = None
        self.max_consecutive_errors = max_consecutive_errors
        self.retry_policy = retry_policy or RetryPolicy()

    @property
    def watching(self) -> int:
        """How many jobs are being watched."""
        return len(self._watchers)

    async def watch(self, job_id: str, *, poll_interval: float) -> AsyncGenerator[Job, None]:
        """Yield the job each time its status changes, ending after a terminal status.

        The first poll of a newly watched job comes with the poller's next cycle.

        :param job_id: the job.
        :param poll_interval: the longest this watcher wants between polls.
        :raises DoitongNotFound: if the API does not know the job.
        :raises DoitongError: if polling fails ``max_consecutive_errors`` times in a row.
        """
        watcher = _Watcher(poll_interval=poll_interval)
        self._watchers.setdefault(job_id, []).append(watcher)
        self._ensure_running()
        try:
            while True:
                item = await watcher.queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    raise DoitongNotFound(f"Doitong job {job_id} does not exist", status=404)
                yield item
                if item.is_terminal:
                    return
        finally:
            self._unregister(job_id, watcher)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"doitong-poller-{self.key}")

    def _unregister(self, job_id: str, watcher: _Watcher) -> None:
        watchers = self._watchers.get(job_id, [])
        if watcher in watchers:
            watchers.remove(watcher)
        if not watchers:
            self._watchers.pop(job_id, None)
        if not self._watchers:
            pollers = _REGISTRY.get(asyncio.get_running_loop(), {})
            if pollers.get(self.key) is self:
                del pollers[self.key]
            if self._task is not None and not self._task.done():
                self._task.cancel()

    def _interval(self) -> float:
        wanted = min(w.poll_interval for ws in self._watchers.values() for w in ws)
        rate_limit = self._client.last_rate_limit if self._client else None
        if rate_limit is None or rate_limit.remaining is None:
            return wanted
        usable = dataclasses.replace(rate_limit, remaining=int(rate_limit.remaining * STATUS_SHARE))
        return usable.pace_delay(now=time.time(), min_interval=wanted)

    async def _poll_once(self) -> None:
        assert self._client is not None
        ids = list(self._watchers)
        jobs = await self._client.get_jobs(ids)
        for job_id, job in jobs.items():
            for watcher in list(self._watchers.get(job_id, [])):
                if job is None:
                    watcher.queue.put_nowait(None)
                elif job.raw_status != watcher.last_status or job.is_terminal:
                    watcher.last_status = job.raw_status
                    watcher.queue.put_nowait(job)

    async def _run(self) -> None:
        failures = 0
        try:
            if self._client is None:
                self._client = await self._client_factory()
            while self._watchers:
                try:
                    await self._poll_once()
                    failures = 0
                    delay = self._interval()
                except DoitongError as exc:
                    failures += 1
                    log.warning("Doitong status poll failed (%d in a row): %s", failures, exc)
                    if failures >= self.max_consecutive_errors:
                        for watchers in list(self._watchers.values()):
                            for watcher in watchers:
                                watcher.queue.put_nowait(exc)
                        failures = 0
                    delay = backoff(self.retry_policy, failures or 1)
                if self._watchers:
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must reach the triggers, not vanish with the task
            log.exception("Doitong poller stopped")
            for watchers in list(self._watchers.values()):
                for watcher in watchers:
                    watcher.queue.put_nowait(exc)
        finally:
            client, self._client = self._client, None
            if client is not None:
                await asyncio.shield(client.aclose())


_REGISTRY: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, JobPoller]] = (
    weakref.WeakKeyDictionary()
)


def get_poller(key: str, client_factory: Callable[[], Awaitable[AsyncDoitongClient]]) -> JobPoller:
    """The poller for ``key`` in the running event loop, created on first use.

    :param key: the connection id.
    :param client_factory: makes the poller's async client.
    """
    pollers = _REGISTRY.setdefault(asyncio.get_running_loop(), {})
    poller = pollers.get(key)
    if poller is None:
        poller = pollers[key] = JobPoller(key=key, client_factory=client_factory)
    return poller
