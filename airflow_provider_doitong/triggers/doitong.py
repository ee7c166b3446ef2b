"""``DoitongJobTrigger``: waits for a Doitong job in the triggerer, holding no worker slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_doitong import events
from airflow_provider_doitong.client import DoitongError, DoitongJobFailed, DoitongNotFound, Job
from airflow_provider_doitong.client.waiting import job_failed_error
from airflow_provider_doitong.connection import DEFAULT_CONN_ID
from airflow_provider_doitong.hooks.doitong import DoitongHook
from airflow_provider_doitong.triggers.poller import get_poller


class DoitongJobTrigger(BaseTrigger):
    """Fires when a Doitong job completes, fails, vanishes or passes its deadline.

    Async only: every trigger of a connection in one triggerer shares one coalesced poller
    (:mod:`~airflow_provider_doitong.triggers.poller`). Its kwargs are plain JSON values; the
    API key is read from the connection, never carried.

    :param job_id: the job to wait for.
    :param doitong_conn_id: the ``doitong`` connection.
    :param poll_interval: the longest wait between two polls of the job, in seconds.
    :param deadline: a Unix time after which the trigger gives up (the job keeps running).
    """

    def __init__(
        self,
        *,
        job_id: str,
        doitong_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = 5.0,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.doitong_conn_id = doitong_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = float(deadline) if deadline is not None else None
        self._updates: AsyncGenerator[Job, None] | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_id": self.job_id,
                "doitong_conn_id": self.doitong_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    async def _client_factory(self) -> Any:
        return await DoitongHook(doitong_conn_id=self.doitong_conn_id).get_async_conn(max_connections=4)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        poller = get_poller(self.doitong_conn_id, self._client_factory)
        updates = self._updates = poller.watch(self.job_id, poll_interval=self.poll_interval)
        last: Job | None = None
        try:
            while True:
                timeout = None if self.deadline is None else max(0.0, self.deadline - time.time())
                last = await asyncio.wait_for(anext(updates), timeout)
                self.log.info(
                    "Doitong job %s is %s (%.1fs waited)",
                    self.job_id,
                    last.raw_status,
                    time.monotonic() - started,
                )
                if last.is_terminal:
                    break
        except (TimeoutError, asyncio.TimeoutError):
            event = events.make_event(
                status=events.TIMEOUT,
                job_id=self.job_id,
                job=last,
                message=f"Doitong job {self.job_id} did not finish by its deadline; it keeps running at Doitong",
            )
        except DoitongNotFound as exc:
            event = events.make_event(status=events.NOT_FOUND, job_id=self.job_id, message=str(exc))
        except DoitongError as exc:
            event = events.make_event(status=events.ERROR, job_id=self.job_id, job=last, message=str(exc))
        else:
            if last.status.value == "completed":
                event = events.make_event(
                    status=events.SUCCESS,
                    job_id=self.job_id,
                    job=last,
                    message=f"Doitong job {self.job_id} completed",
                )
            else:
                failure: DoitongJobFailed = job_failed_error(last)
                event = events.make_event(
                    status=events.FAILED, job_id=self.job_id, job=last, message=str(failure)
                )
        finally:
            await self.cleanup()
        yield TriggerEvent(event)

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
