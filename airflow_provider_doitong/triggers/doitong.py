"""``DoitongJobTrigger``: waits for a Doitong job in the triggerer, holding no worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_doitong._compat import deferral_settle_s
from airflow_provider_doitong.client import DoitongError, Job
from airflow_provider_doitong.client.redaction import redact
from airflow_provider_doitong.client.waiting import JobWait, timeout_error
from airflow_provider_doitong.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_doitong.hooks.doitong import DoitongHook
from airflow_provider_doitong.triggers import events
from airflow_provider_doitong.triggers.poller import get_poller


async def redacted_event(conn_id: str, event: dict[str, Any]) -> dict[str, Any]:
    """An event with the connection's secrets replaced wherever they appear (an error message or a
    job the API echoed them in), before it is stored and sent to the worker.

    :param conn_id: the connection whose secrets are replaced; if it cannot be read, no secret is
        known here and the event is returned as it is.
    """
    try:
        settings = await DoitongHook(doitong_conn_id=conn_id).aget_settings()
    except Exception:  # the connection gone or unusable: the event says so, and holds no key of it
        return event
    return redact(event, settings.secrets)


async def hold_until(not_before: float | None) -> None:
    """Wait until ``not_before`` (a Unix time the deferring task set, ``None``: no wait), so that
    Airflow does not resume the task sooner after its deferral than
    :func:`~airflow_provider_doitong._compat.deferral_settle_s`; never longer than that, however
    far ahead the worker's clock was.
    """
    if not_before is not None and not_before > time.time():
        await asyncio.sleep(min(not_before - time.time(), deferral_settle_s()))


class DoitongJobTrigger(BaseTrigger):
    """Fires when a Doitong job completes, fails, vanishes or passes its deadline.

    Async only: every trigger of a connection in one triggerer shares one coalesced poller
    (:mod:`~airflow_provider_doitong.triggers.poller`). Its kwargs are plain JSON values; the
    API key is read from the connection, never carried.

    :param job_id: the job to wait for.
    :param doitong_conn_id: the ``doitong`` connection.
    :param poll_interval: the longest wait between two polls of the job, in seconds.
    :param deadline: a Unix time after which the trigger gives up (the job keeps running).
    :param not_before: a Unix time before which it does not fire: a job that ends sooner is told at
        it (:func:`~airflow_provider_doitong._compat.deferral_settle_s` after the deferral).
    :param started_at: when the job was created, if the deferring task knows (its submission): the
        shared poller then reads it first when it is due, not at once to learn its start.
    """

    def __init__(
        self,
        *,
        job_id: str,
        doitong_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 5.0,
        deadline: float | None = None,
        not_before: float | None = None,
        started_at: float | None = None,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.started_at = float(started_at) if started_at is not None else None
        self.doitong_conn_id = doitong_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = float(deadline) if deadline is not None else None
        self.not_before = float(not_before) if not_before is not None else None
        self._updates: AsyncGenerator[Job, None] | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "doitong_conn_id": self.doitong_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
                "not_before": self.not_before,
                "started_at": self.started_at,
            },
        )

    async def _client_factory(self) -> Any:
        return await DoitongHook(doitong_conn_id=self.doitong_conn_id).get_async_conn(max_connections=4)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        poller = get_poller(
            self.doitong_conn_id,
            self._client_factory,
            DoitongHook(doitong_conn_id=self.doitong_conn_id).acurrent_api_key,
        )
        updates = self._updates = poller.watch(
            self.job_id, poll_interval=self.poll_interval, started_at=self.started_at
        )
        wait = JobWait(job_id=self.job_id, poll_interval=self.poll_interval, deadline=self.deadline)
        last: Job | None = None
        outcome: Job | BaseException
        try:
            while True:
                timeout = None if self.deadline is None else max(0.0, self.deadline - time.time())
                last = await asyncio.wait_for(anext(updates), timeout)
                step = wait.observe(last)
                if step.done:
                    outcome = step.job if step.job is not None else step.error  # type: ignore[assignment]
                    break
        except (TimeoutError, asyncio.TimeoutError):
            outcome = timeout_error(self.job_id, last, cause=poller.last_error)
        except DoitongError as exc:
            outcome = exc
        except Exception as exc:  # the connection gone or unreadable, or a bug: the task must hear of it
            self.log.exception("Waiting for Doitong job %s failed", self.job_id)
            outcome = DoitongError(
                f"Waiting for Doitong job {self.job_id} failed: {type(exc).__name__}: {exc}"
            )
        finally:
            await self.cleanup()
        await hold_until(self.not_before)
        yield TriggerEvent(
            await redacted_event(self.doitong_conn_id, events.event_for(self.job_id, outcome, last=last))
        )

    async def cleanup(self) -> None:
        """Leave the shared poller (the last trigger out stops it and closes its client)."""
        updates, self._updates = self._updates, None
        if updates is not None:
            await updates.aclose()

    async def on_kill(self) -> None:
        self.log.warning(
            "Stopped waiting for Doitong job %s; the API has no cancel, so the job keeps running "
            "(and is charged) at Doitong",
            self.job_id,
        )
