"""``DoitongJobSensor``: waits for a Doitong job submitted elsewhere."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_doitong._compat import conf, deferral_settle_s
from airflow_provider_doitong.client import DoitongError
from airflow_provider_doitong.client.outcomes import Role
from airflow_provider_doitong.client.waiting import JobWait
from airflow_provider_doitong.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_doitong.hooks.doitong import DoitongHook
from airflow_provider_doitong.operators.airflow_errors import airflow_error
from airflow_provider_doitong.triggers import events
from airflow_provider_doitong.triggers.doitong import DoitongJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class DoitongJobSensor(BaseSensorOperator):
    """Wait for a Doitong job (e.g. one submitted with ``wait_for_completion=False``) to complete.

    Works in ``poke``, ``reschedule`` or deferrable mode; deferrable waits in the triggerer with the
    same :class:`DoitongJobTrigger` as the operator. A failed or unknown job fails the sensor at once
    (a retry would see the same job). While the API is unavailable (5xx, no answer, 429) a poke
    reports "not yet" and the sensor's ``timeout`` decides when to give up; a refused key is read
    from the connection again once before the sensor fails. The XCom value is the completed job,
    as plain JSON.

    :param job_id: the job (templated).
    :param doitong_conn_id: the ``doitong`` connection.
    :param deferrable: wait in the triggerer.
    :param poll_interval: seconds between polls in deferrable mode (``poke_interval`` otherwise).
    :param min_defer_seconds: deferrable mode reads the job at once and then waits in the worker up
        to this long before it defers, as ``FluxGenerateOperator`` does (0, the default: defer at
        once): a job that is done or nearly done costs no resume, and is not resumed seconds after
        the deferral (when Airflow 3.3's scheduler can fail the resumed task, apache/airflow#72716).
    """

    template_fields: Sequence[str] = ("job_id",)
    ui_color = "#e8d7ff"

    def __init__(
        self,
        *,
        job_id: str,
        doitong_conn_id: str = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 5.0,
        min_defer_seconds: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, got {poll_interval!r}")
        if not min_defer_seconds >= 0:
            raise ValueError(f"min_defer_seconds must not be negative, got {min_defer_seconds!r}")
        self.min_defer_seconds = float(min_defer_seconds)
        self.job_id = job_id
        self.doitong_conn_id = doitong_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        deadline = time.time() + self.timeout if self.timeout else None
        if self.min_defer_seconds > 0:
            done = self._wait_here(context, deadline=deadline)
            if done is not None:
                return done
        self.defer(
            trigger=DoitongJobTrigger(
                job_id=str(self.job_id),
                doitong_conn_id=self.doitong_conn_id,
                poll_interval=self.poll_interval,
                deadline=deadline,
                not_before=time.time() + deferral_settle_s(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + 60) if self.timeout else None,
        )

    def _wait_here(self, context: Context, *, deadline: float | None) -> dict[str, Any] | None:
        """The completed job, read at once and then for up to ``min_defer_seconds`` (``None``: defer)."""
        first = self.poke(context)
        if first.is_done:
            assert isinstance(first.xcom_value, dict)  # poke's value for a completed job
            return first.xcom_value
        hook = DoitongHook(doitong_conn_id=self.doitong_conn_id)
        with hook.get_conn() as client:
            try:
                job = client.wait_while_young(
                    str(self.job_id),
                    until=time.time() + self.min_defer_seconds,
                    poll_interval=self.poll_interval,
                    deadline=deadline,
                    refresh_key=hook.current_api_key,
                )
            except DoitongError as exc:
                raise airflow_error(exc, role=Role.WATCHER, conn_id=self.doitong_conn_id) from None
        return None if job is None else job.to_dict()

    def poke(self, context: Context) -> PokeReturnValue:
        job_id = str(self.job_id)
        hook = DoitongHook(doitong_conn_id=self.doitong_conn_id)
        wait = JobWait(job_id=job_id, poll_interval=self.poll_interval)
        with hook.get_conn() as client:
            while True:
                try:
                    step = wait.observe(client.get_job(job_id))
                    break
                except DoitongError as exc:
                    step = wait.observe_error(exc)
                    if not step.reauth:
                        break
                    client.set_api_key(hook.current_api_key())
        if isinstance(step.error, DoitongError):
            raise airflow_error(step.error, role=Role.WATCHER, conn_id=self.doitong_conn_id)
        if step.job is None:
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=step.job.to_dict())

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: return the job, or fail as the one outcome table says."""
        try:
            status, job_id, job, message = events.read_event(event)
        except events.InvalidTriggerEvent as exc:
            raise airflow_error(exc, role=Role.WATCHER) from None
        error = events.error_of(status, job_id, job, message)
        if error is not None:
            raise airflow_error(error, role=Role.WATCHER, conn_id=self.doitong_conn_id)
        assert job is not None  # read_event checks a success carries its job
        self.log.info("Doitong job %s completed", job_id)
        return job.to_dict()
