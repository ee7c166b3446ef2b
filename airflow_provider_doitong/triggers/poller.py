"""One coalesced poller per connection per triggerer: every waiting job read in one request.

However many Doitong triggers wait in a triggerer process, each connection gets one poller, which
reads all their jobs with one aliased GraphQL request when
:func:`~airflow_provider_doitong.client.pacing.next_read_delay` says (the schedule of the sync wait
and of a batch too): at the latest after the shortest ``poll_interval`` its watchers asked for,
paced by the plan's ``X-RateLimit-*`` headers on
:func:`~airflow_provider_doitong.client.pacing.status_budget`'s share of the window, and sooner
when a job is young or due. Status requests per minute then depend on the interval, not on the
number of waiting tasks. A trigger that leaves (done or cancelled) unregisters; the last one out
stops the poller and closes its client.

While the API is unavailable (5xx, no answer, 429) the poller backs off and keeps polling: no
watcher hears of it, and each trigger's own deadline decides when to give up. A 401 makes it read
the connection's current key once (a rotated key) and poll again with it; a second 401 in a row
reaches every watcher. What to do after a failed poll is :func:`~airflow_provider_doitong.client.waiting.after_poll_error`'s
decision, as for the sync wait and a batch's reads in the worker, with the backoff of the poller's
client's own retry policy (the connection's).
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field

from airflow_provider_doitong.client import AsyncDoitongClient, DoitongError, DoitongNotFound, Job, JobStatus
from airflow_provider_doitong.client.errors import was_held
from airflow_provider_doitong.client.models import parse_api_time
from airflow_provider_doitong.client.pacing import DURATION_SAMPLES, MIN_POLL_GAP, next_read_delay
from airflow_provider_doitong.client.retry import RetryPolicy
from airflow_provider_doitong.client.waiting import WaitStep, after_poll_error

log = logging.getLogger(__name__)


@dataclass
class _Watcher:
    poll_interval: float
    queue: asyncio.Queue[Job | None | BaseException] = field(default_factory=asyncio.Queue)
    last_status: str | None = None


class JobPoller:
    """Polls every registered job of one connection in coalesced requests.

    :param key: the registry key (connection id).
    :param client_factory: makes the async client the poller uses.
    :param refresh_key: reads the connection's current API key, once after a 401 (a rotated key);
        without it a 401 reaches every watcher.
    :param max_consecutive_errors: failed polls in a row, of answers that break the contract, after
        which every watcher gets the error (an unavailable API is waited out instead).
    :param retry_policy: backoff between failed polls (``None``: the client's own, as for every
        other read).
    """

    def __init__(
        self,
        *,
        key: str,
        client_factory: Callable[[], Awaitable[AsyncDoitongClient]],
        refresh_key: Callable[[], Awaitable[str]] | None = None,
        max_consecutive_errors: int = 5,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.key = key
        self._client_factory = client_factory
        self._refresh_key = refresh_key
        self._client: AsyncDoitongClient | None = None
        self._watchers: dict[str, list[_Watcher]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.max_consecutive_errors = max_consecutive_errors
        self.retry_policy = retry_policy
        self._created_at: dict[str, float] = {}
        # Shared by every poller of the connection in this process, so what one learned outlives it.
        self._durations = _DURATIONS.setdefault(key, deque(maxlen=DURATION_SAMPLES))
        self._last_poll_at = 0.0
        #: When the last poll that got an answer started: every job watched then was read as of it.
        self.last_read_at: float | None = None
        #: The error of the last poll, while polls fail (``None`` once one succeeds).
        self.last_error: DoitongError | None = None
        #: The Unix time polls started failing, while they fail.
        self.failing_since: float | None = None

    async def watch(
        self, job_id: str, *, poll_interval: float, started_at: float | None = None
    ) -> AsyncGenerator[Job, None]:
        """Yield the job each time its status changes, ending after a terminal status.

        The first poll of a newly watched job comes with the poller's next cycle. A poller that
        starts for jobs whose starts it is told reads first when the schedule says (at their
        expected end, once durations are learned), not at once to learn when they started.

        :param poll_interval: the longest this watcher wants between polls.
        :param started_at: when the job was created (the API's ``createdAt``), if the caller knows.
        :raises DoitongNotFound: if the API does not know the job.
        :raises DoitongError: what polling cannot get past (a 401 after a fresh client, a 400,
            ``max_consecutive_errors`` answers in a row that break the contract).
        """
        watcher = _Watcher(poll_interval=poll_interval)
        if started_at is not None:
            self._created_at.setdefault(job_id, started_at)
        self._register(job_id, watcher)
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

    def _register(self, job_id: str, watcher: _Watcher) -> None:
        self._watchers.setdefault(job_id, []).append(watcher)
        # The last watcher may have left between get_poller() and this first step of watch()
        # (asyncio.wait_for runs it as a task of its own before Python 3.12): come back into the
        # registry, so later triggers share this poller, and run again if the loop was stopped.
        pollers = _REGISTRY.setdefault(asyncio.get_running_loop(), {})
        pollers.setdefault(self.key, self)
        if self._task is None or self._task.done() or self._stopping:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"doitong-poller-{self.key}"
            )

    def _unregister(self, job_id: str, watcher: _Watcher) -> None:
        watchers = self._watchers.get(job_id, [])
        if watcher in watchers:
            watchers.remove(watcher)
        if not watchers:
            self._watchers.pop(job_id, None)
            self._created_at.pop(job_id, None)
            if self._client is not None:  # no one waits for it here any more (ended, or given up)
                self._client.forget_jobs([job_id])
        if not self._watchers:
            pollers = _REGISTRY.get(asyncio.get_running_loop(), {})
            if pollers.get(self.key) is self:
                del pollers[self.key]
            if self._task is not None and not self._task.done():
                self._stopping = True
                self._task.cancel()

    def _interval(self, *, last_read_at: float | None = None) -> float:
        return next_read_delay(
            now=time.time(),
            last_read_at=self._last_poll_at if last_read_at is None else last_read_at,
            poll_interval=min(w.poll_interval for ws in self._watchers.values() for w in ws),
            started=[self._created_at[j] for j in self._watchers if j in self._created_at],
            typical_duration=statistics.median(self._durations) if self._durations else None,
            rate_limit=self._client.last_rate_limit if self._client else None,
            status_share=True,
        )

    def _first_delay(self) -> float:
        """How long a starting poller waits before its first read: not at all while a watched job's
        start is unknown (the read tells it); else as the schedule says, with the jobs' statuses
        known as of their starts (a job of an expected duration is read at its end; one that has run
        longer than ``poll_interval``, as after a triggerer's restart, at once)."""
        starts = [self._created_at.get(j) for j in self._watchers]
        if not starts or any(s is None for s in starts):
            return 0.0
        return self._interval(last_read_at=max(s for s in starts if s is not None))

    async def _poll_once(self, client: AsyncDoitongClient) -> None:
        ids = list(self._watchers)
        started = self._last_poll_at = time.time()
        jobs = await client.get_jobs(ids)
        self.last_read_at = started
        for job_id, job in jobs.items():
            watchers = self._watchers.get(job_id)
            if not watchers:  # left while the request was in flight
                continue
            if job is not None:
                self._learn(job_id, job)
            for watcher in list(watchers):
                if job is None:
                    watcher.queue.put_nowait(None)
                elif job.raw_status != watcher.last_status or job.is_terminal:
                    watcher.last_status = job.raw_status
                    watcher.queue.put_nowait(job)

    def _learn(self, job_id: str, job: Job) -> None:
        created = parse_api_time(job.created_at)
        if created is not None:
            self._created_at[job_id] = created
        if job.is_terminal:
            self._created_at.pop(job_id, None)
            duration = job.turnaround
            if duration is not None and job.status is JobStatus.COMPLETED:
                self._durations.append(duration)

    def _tell_everyone(self, item: BaseException) -> None:
        for watchers in list(self._watchers.values()):
            for watcher in watchers:
                watcher.queue.put_nowait(item)

    def _failed(self, exc: DoitongError, failures: int, reauthed: bool, policy: RetryPolicy) -> WaitStep:
        """Judge a failed poll (see :func:`after_poll_error`), log it, and tell every watcher if it is final.
        A poll held unsent for a spent window waits for its reset, and is no failure."""
        now = time.time()
        if was_held(exc):
            step = after_poll_error(
                "", exc, failures=1, reauthed=reauthed, now=now, deadline=None, policy=policy
            )
            log.info("%s; polling again in %.1fs", exc, step.sleep)
            return step
        if self.failing_since is None:
            self.failing_since = now
        self.last_error = exc
        step = after_poll_error(
            f"({len(self._watchers)} jobs)",
            exc,
            failures=failures,
            reauthed=reauthed,
            now=now,
            deadline=None,
            policy=policy,
            max_odd_errors=self.max_consecutive_errors,
        )
        if step.reauth:
            log.warning("Doitong refused the API key (%s); reading the connection again", exc)
        elif step.error is not None:
            log.warning("Doitong status polls failed %d times in a row: %s; ending every wait", failures, exc)
            self._tell_everyone(exc)
        else:
            log.warning(
                "Doitong status poll failed (%d in a row, for %.0fs): %s; polling again in %.1fs",
                failures,
                now - self.failing_since,
                exc,
                step.sleep,
            )
        return step

    async def _run(self) -> None:
        failures, reauthed = 0, False
        client: AsyncDoitongClient | None = None
        try:
            if (first := self._first_delay()) > 0:
                await asyncio.sleep(first)
            while self._watchers:
                if client is None:
                    client = self._client = await self._client_factory()
                delay = MIN_POLL_GAP
                try:
                    await self._poll_once(client)
                except DoitongError as exc:
                    failures += 0 if was_held(exc) else 1
                    step = self._failed(
                        exc,
                        failures,
                        reauthed or self._refresh_key is None,
                        self.retry_policy or client.retry_policy,
                    )
                    if step.reauth and self._refresh_key is not None:  # the current key, at once
                        reauthed = True
                        client.set_api_key(await self._refresh_key())
                        continue
                    if step.error is not None:  # told: whoever comes next starts afresh
                        failures, reauthed = 0, False
                    delay = step.sleep
                else:
                    if failures:
                        log.info("Doitong answers again after %d failed polls", failures)
                    failures, reauthed = 0, False
                    self.last_error = self.failing_since = None
                    delay = self._interval()
                if self._watchers:
                    await asyncio.sleep(max(MIN_POLL_GAP, delay))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must reach the triggers, not vanish with the task
            log.exception("Doitong poller stopped")
            self._tell_everyone(exc)
        finally:
            if self._client is client:
                self._client = None
            if client is not None:
                await asyncio.shield(client.aclose())


#: Recent job durations per connection, kept for the life of the triggerer process.
_DURATIONS: dict[str, deque[float]] = {}

_REGISTRY: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, JobPoller]] = (
    weakref.WeakKeyDictionary()
)


def get_poller(
    key: str,
    client_factory: Callable[[], Awaitable[AsyncDoitongClient]],
    refresh_key: Callable[[], Awaitable[str]] | None = None,
) -> JobPoller:
    """The poller for ``key`` in the running event loop, created on first use.

    :param key: the connection id.
    :param client_factory: makes the poller's async client.
    :param refresh_key: reads the connection's current API key (see :class:`JobPoller`).
    """
    pollers = _REGISTRY.setdefault(asyncio.get_running_loop(), {})
    poller = pollers.get(key)
    if poller is None:
        poller = pollers[key] = JobPoller(key=key, client_factory=client_factory, refresh_key=refresh_key)
    return poller
