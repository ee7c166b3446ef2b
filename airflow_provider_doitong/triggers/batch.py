"""``DoitongBatchTrigger``: a deferred batch waits here until its task is worth resuming.

It watches the batch's running jobs through the connection's shared coalesced poller
(:mod:`~airflow_provider_doitong.triggers.poller`), so a batch's waits cost no more status
requests than any other waiting task's, and fires at the first of: ``min_ended`` jobs ended
(completed, failed or unknown to the API), the ``wake_at`` time the task asked for (it predicts
when its next jobs are due and asks to be woken just early enough to be back when they are), or
the deadline. Its kwargs are plain JSON: job ids and times, never prompts or secrets. The event
says only why it fired; the task reads the jobs itself when it resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_doitong.client import AsyncDoitongClient, DoitongError, DoitongNotFound
from airflow_provider_doitong.connection import DEFAULT_CONN_ID
from airflow_provider_doitong.events import InvalidTriggerEvent
from airflow_provider_doitong.hooks.doitong import DoitongHook
from airflow_provider_doitong.triggers.poller import get_poller

ENDED = "ended"
WAKE = "wake"
TIMEOUT = "timeout"
ERROR = "error"
EVENT_STATUSES = frozenset({ENDED, WAKE, TIMEOUT, ERROR})
_EVENT_KEYS = frozenset({"status", "ended", "fired_at", "message"})


class InvalidBatchEvent(InvalidTriggerEvent):
    """An event no :class:`DoitongBatchTrigger` sends."""


def make_batch_event(*, status: str, ended: Sequence[str], fired_at: float, message: str) -> dict[str, Any]:
    """A batch trigger's event payload: plain JSON.

    :param status: one of :data:`EVENT_STATUSES`.
    :param ended: the job ids seen ended.
    :param fired_at: the Unix time the trigger fired (the task measures its resume time from it).
    :param message: why, for the task log.
    """
    if status not in EVENT_STATUSES:
        raise ValueError(f"unknown event status {status!r}")
    return {
        "status": status,
        "ended": [str(j) for j in ended],
        "fired_at": float(fired_at),
        "message": message,
    }


def read_batch_event(event: Any) -> tuple[str, list[str], float, str]:
    """Check an event against the allow-list and read it back.

    :param event: what the task's resume method received.
    :returns: ``(status, ended job ids, fired_at, message)``.
    :raises InvalidBatchEvent: for anything the trigger does not send.
    """
    if not isinstance(event, dict) or set(event) != _EVENT_KEYS:
        raise InvalidBatchEvent(f"unexpected Doitong batch event: {event!r:.200}")
    status, ended, fired_at, message = event["status"], event["ended"], event["fired_at"], event["message"]
    if (
        status not in EVENT_STATUSES
        or not isinstance(ended, list)
        or not all(isinstance(j, str) for j in ended)
        or isinstance(fired_at, bool)
        or not isinstance(fired_at, int | float)
        or not isinstance(message, str)
    ):
        raise InvalidBatchEvent(f"unexpected Doitong batch event: {event!r:.200}")
    return status, list(ended), float(fired_at), message


class DoitongBatchTrigger(BaseTrigger):
    """Fires when a deferred batch's task should resume.

    :param job_ids: the batch's running jobs.
    :param doitong_conn_id: the ``doitong`` connection (its key is read here, never carried).
    :param poll_interval: the longest wait between two reads of the jobs.
    :param wake_at: a Unix time to fire at even if no job has ended (``None``: only on jobs).
    :param deadline: a Unix time after which the batch gives up waiting.
    :param min_ended: fire once this many jobs have ended (all of them if fewer are watched).
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
    ) -> None:
        super().__init__()
        self.job_ids = [str(j) for j in job_ids]
        self.doitong_conn_id = doitong_conn_id
        self.poll_interval = float(poll_interval)
        self.wake_at = float(wake_at) if wake_at is not None else None
        self.deadline = float(deadline) if deadline is not None else None
        self.min_ended = max(1, int(min_ended))
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
            },
        )

    async def _client_factory(self) -> AsyncDoitongClient:
        return await DoitongHook(doitong_conn_id=self.doitong_conn_id).get_async_conn(max_connections=4)

    def _timer(self) -> tuple[float | None, str]:
        moments = [(t, s) for t, s in ((self.wake_at, WAKE), (self.deadline, TIMEOUT)) if t is not None]
        if not moments:
            return None, WAKE
        moment, status = min(moments)
        return max(0.0, moment - time.time()), status

    async def run(self) -> AsyncIterator[TriggerEvent]:
        ended: list[str] = []
        errors: list[str] = []
        enough = asyncio.Event()
        needed = min(self.min_ended, len(self.job_ids))

        async def watch(job_id: str, poller: Any) -> None:
            try:
                async for job in poller.watch(job_id, poll_interval=self.poll_interval):
                    if job.is_terminal:
                        break
            except DoitongNotFound:
                pass
            except DoitongError as exc:
                errors.append(str(exc))
                enough.set()
                return
            ended.append(job_id)
            if len(ended) >= needed:
                enough.set()

        if self.job_ids:
            poller = get_poller(self.doitong_conn_id, self._client_factory)
            self._tasks = [asyncio.create_task(watch(j, poller)) for j in self.job_ids]
        elif self.wake_at is None and self.deadline is None:
            enough.set()  # nothing to wait for
        timeout, timer_status = self._timer()
        try:
            await asyncio.wait_for(enough.wait(), timeout)
            status = ERROR if errors and not ended else ENDED
            message = errors[0] if status == ERROR else f"{len(ended)} of {len(self.job_ids)} jobs ended"
        except (TimeoutError, asyncio.TimeoutError):
            status, message = (
                timer_status,
                f"{len(ended)} of {len(self.job_ids)} jobs ended by the {timer_status}",
            )
        finally:
            await self.cleanup()
        self.log.info("Doitong batch: %s", message)
        yield TriggerEvent(
            make_batch_event(status=status, ended=ended, fired_at=time.time(), message=message)
        )

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
