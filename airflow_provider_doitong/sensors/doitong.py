"""``DoitongJobSensor``: waits for a Doitong job submitted elsewhere."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_provider_doitong import events
from airflow_provider_doitong._compat import AirflowException, AirflowFailException, conf
from airflow_provider_doitong.client import DoitongError, JobStatus
from airflow_provider_doitong.client.waiting import job_failed_error
from airflow_provider_doitong.connection import DEFAULT_CONN_ID
from airflow_provider_doitong.hooks.doitong import DoitongHook
from airflow_provider_doitong.triggers.doitong import DoitongJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class DoitongJobSensor(BaseSensorOperator):
    """Wait for a Doitong job (e.g. one submitted with ``wait_for_completion=False``) to complete.

    Works in ``poke``, ``reschedule`` or deferrable mode; deferrable waits in the triggerer with the
    same :class:`DoitongJobTrigger` as the operator. A failed job fails the sensor with the job's
    error. The XCom value is the completed job, as plain JSON.

    :param job_id: the job (templated).
    :param doitong_conn_id: the ``doitong`` connection.
    :param deferrable: wait in the triggerer.
    :param poll_interval: seconds between polls in deferrable mode (``poke_interval`` otherwise).
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.doitong_conn_id = doitong_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        deadline = time.time() + self.timeout if self.timeout else None
        self.defer(
            trigger=DoitongJobTrigger(
                job_id=str(self.job_id),
                doitong_conn_id=self.doitong_conn_id,
                poll_interval=self.poll_interval,
                deadline=deadline,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + 60) if self.timeout else None,
        )

    def poke(self, context: Context) -> PokeReturnValue:
        with DoitongHook(doitong_conn_id=self.doitong_conn_id).get_conn() as client:
            try:
                job = client.get_job(str(self.job_id))
            except DoitongError as exc:
                raise AirflowException(f"Reading Doitong job {self.job_id} failed: {exc}") from None
        if job is None:
            raise AirflowFailException(f"Doitong job {self.job_id} does not exist")
        self.log.info("Doitong job %s is %s", job.id, job.raw_status)
        if job.status is JobStatus.FAILED:
            raise AirflowFailException(str(job_failed_error(job)))
        return PokeReturnValue(is_done=job.status is JobStatus.COMPLETED, xcom_value=job.to_dict())

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: return the job, or fail with its error."""
        try:
            status, job_id, job, message = events.read_event(event)
        except events.InvalidTriggerEvent as exc:
            raise AirflowException(str(exc)) from None
        if status == events.SUCCESS and job is not None:
            self.log.info("Doitong job %s completed", job_id)
            return job.to_dict()
        if status in (events.FAILED, events.NOT_FOUND):
            raise AirflowFailException(message)
        raise AirflowException(message)
