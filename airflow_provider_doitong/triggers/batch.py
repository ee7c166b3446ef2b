"""``DoitongBatchTrigger``: a deferred batch waits here until its task is worth resuming.

It watches the batch's running jobs through the connection's shared coalesced poller
(:mod:`~airflow_provider_doitong.triggers.poller`), so a batch's waits cost no more status
requests than any other waiting task's, and fires at the first of: ``min_ended`` jobs ended
(completed, failed or unknown to the API), the ``wake_at`` time the task asked for (it predicts
when its next jobs are due and asks to be woken just early enough to be back when they are), or
the deadline. Its kwargs are plain JSON: job ids and times, never prompts or secrets. The event
says why it fired and when the jobs were last read; the task reads them itself when it resumes,
no sooner than its schedule asks after that read.

The task has just read (or submitted) the jobs when it defers, so the trigger's first read comes when
the task's planner would read next (``first_read_at``: jobs whose end is predicted at that end, others
a ``poll_interval`` after the task's read), not at once; a wake-up due before then costs no read at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_doitong.client import AsyncDoitongClient, DoitongError, DoitongNotFound
from airflow_provider_doitong.client.pacing import next_read_at
from airflow_provider_doitong.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_doitong.hooks.doitong import DoitongHook
from airflow_provider_doitong.triggers.doitong import hold_until, redacted_event
from airflow_provider_doitong.triggers.events import (
    BATCH_ENDED,
    BATCH_ERROR,
    BATCH_TIMEOUT,
    BATCH_WAKE,
    make_batch_event,
)
from airflow_provider_doitong.triggers.poller import JobPoller, get_poller


class _Watches:
    """What one run's job watches share: the jobs ended, the errors, and the poller they read through.

    :param needed: how many jobs must end before :attr:`enough` is set (an error sets it at once).
    """

    def __init__(self, needed: int) -> None:
        self.needed = needed
        self.ended: list[str] = []
        self.errors: list[str] = []
        self.enough = asyncio.Event()
        self.poller: JobPoller | None = None
        #: When the watches joined the poller: a read before then is not one of theirs.
        self.watched_from: float | None = None

    async def watch(self, job_id: str, source: JobPoller, poll_interval: float) -> None:
        """Wait for one job to end; a job the API does not know has ended too."""
        try:
            async for job in source.watch(job_id, poll_interval=poll_interval):
                if job.is_terminal:
                    break
        except DoitongNotFound:
            pass
        except DoitongError as exc:
            self.errors.append(str(exc))
            self.enough.set()
            return
        self.ended.append(job_id)
        if len(self.ended) >= self.needed:
            self.enough.set()

    def last_read_at(self, default: float | None) -> float | None:
        """When the poller last read the jobs for these watches, or ``default`` if it has not yet."""
        last_read = self.poller.last_read_at if self.poller is not None else None
        if self.watched_from is not None and last_read is not None and last_read >= self.watched_from:
            return last_read
        return default


class DoitongBatchTrigger(BaseTrigger):
    """Fires when a deferred batch's task should resume.

    :param job_ids: the batch's running jobs.
    :param doitong_conn_id: the ``doitong`` connection (its key is read here, never carried).
    :param poll_interval: the longest wait between two reads of the jobs.
    :param wake_at: a Unix time to fire at even if no job has ended (``None``: only on jobs).
    :param deadline: a Unix time after which the batch gives up waiting.
    :param min_ended: fire once this many jobs have ended (all of them if fewer are watched).
    :param read_at: when the task last knew every job's status (``None``: read at once).
    :param first_read_at: when to read first (``None``: a ``poll_interval`` after ``read_at``, as a
        trigger serialized by an earlier release says nothing of it).
    :param not_before: a Unix time before which it does not fire (see
        :func:`~airflow_provider_doitong.triggers.doitong.hold_until`).
    """

    def __init__(
        self,
        *,
        job_ids: Sequence[str],
        doitong_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 10.0,
        wake_at: float | None = None,
        deadline: float | None = None,
        min_ended: int = 1,
        read_at: float | None = None,
        first_read_at: float | None = None,
        not_before: float | None = None,
    ) -> None:
        super().__init__()
        self.job_ids = [str(j) for j in job_ids]
        self.doitong_conn_id = doitong_conn_id
        self.poll_interval = float(poll_interval)
        self.wake_at = float(wake_at) if wake_at is not None else None
        self.deadline = float(deadline) if deadline is not None else None
        self.min_ended = max(1, int(min_ended))
        self.read_at = float(read_at) if read_at is not None else None
        self.first_read_at = float(first_read_at) if first_read_at is not None else None
        self.not_before = float(not_before) if not_before is not None else None
        self._tasks: list[asyncio.Task[None]] = []

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_ids": list(self.job_ids),
                "doitong_conn_id": self.doitong_conn_id,
                "poll_interval": self.poll_interval,
                "wake_at": self.wake_at,
                "deadline": self.deadline,
                "min_ended": self.min_ended,
                "read_at": self.read_at,
                "first_read_at": self.first_read_at,
                "not_before": self.not_before,
            },
        )

    async def _client_factory(self) -> AsyncDoitongClient:
        return await DoitongHook(doitong_conn_id=self.doitong_conn_id).get_async_conn(max_connections=4)

    def _timer(self) -> tuple[float | None, str]:
        moments = [
            (t, s) for t, s in ((self.wake_at, BATCH_WAKE), (self.deadline, BATCH_TIMEOUT)) if t is not None
        ]
        if not moments:
            return None, BATCH_WAKE
        moment, status = min(moments)
        return max(0.0, moment - time.time()), status

    async def _start_watching(self, watches: _Watches) -> None:
        """Join the connection's poller and watch every job, no sooner than the first read is due."""
        first = self.first_read_at
        if first is None and self.read_at is not None:
            first = next_read_at(last_read_at=self.read_at, poll_interval=self.poll_interval)
        if first is not None:
            await asyncio.sleep(max(0.0, first - time.time()))
        source = watches.poller = get_poller(
            self.doitong_conn_id,
            self._client_factory,
            DoitongHook(doitong_conn_id=self.doitong_conn_id).acurrent_api_key,
        )
        watches.watched_from = time.time()
        self._tasks.extend(
            asyncio.create_task(watches.watch(j, source, self.poll_interval)) for j in self.job_ids
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watches = _Watches(needed=min(self.min_ended, len(self.job_ids)))
        ended, errors, read_at = watches.ended, watches.errors, self.read_at
        if self.job_ids:
            self._tasks = [asyncio.create_task(self._start_watching(watches))]
        elif self.wake_at is None and self.deadline is None:
            watches.enough.set()  # nothing to wait for
        timeout, timer_status = self._timer()
        try:
            await asyncio.wait_for(watches.enough.wait(), timeout)
            status = BATCH_ERROR if errors and not ended else BATCH_ENDED
            message = (
                errors[0] if status == BATCH_ERROR else f"{len(ended)} of {len(self.job_ids)} jobs ended"
            )
        except (TimeoutError, asyncio.TimeoutError):
            status, message = (
                timer_status,
                f"{len(ended)} of {len(self.job_ids)} jobs ended by the {timer_status}",
            )
        finally:
            read_at = watches.last_read_at(default=read_at)
            await self.cleanup()
        self.log.info("Doitong batch: %s", message)
        await hold_until(self.not_before)
        event = make_batch_event(
            status=status, ended=ended, fired_at=time.time(), message=message, read_at=read_at
        )
        yield TriggerEvent(await redacted_event(self.doitong_conn_id, event))

    async def cleanup(self) -> None:
        """Stop watching (each watch leaves the shared poller; the last one out stops it)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def on_kill(self) -> None:
        self.log.warning(
            "Stopped waiting for %d Doitong jobs; the API has no cancel, so they keep running (and are "
            "charged); the batch's next try finds them in its ledger",
            len(self.job_ids),
        )
