"""Submitting a job at most once per request: the task state store record, and waiting out refusals.

A mixin for operators that submit Doitong jobs (``FluxGenerateOperator``). The decisions are
:mod:`~airflow_provider_doitong.submission`'s; this moves their inputs and outputs: the record in
the task state store (read and written in three small methods, so another store can stand in), the
job read back, the POST itself, and the wait (a sleep, or a deferral) after a refusal that proves
no job was made.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.triggers.temporal import DateTimeTrigger

from airflow_provider_doitong import submission
from airflow_provider_doitong._compat import AirflowFailException, task_state_store
from airflow_provider_doitong.client import (
    DoitongClient,
    DoitongError,
    DoitongTimeout,
    ImageRequest,
    Job,
)
from airflow_provider_doitong.client.fingerprint import fingerprint
from airflow_provider_doitong.client.retry import compute_wait
from airflow_provider_doitong.client.times import utc_iso
from airflow_provider_doitong.outcomes import airflow_error, resubmit_after_wait
from airflow_provider_doitong.submission import Action, Record, RecordState, Step

if TYPE_CHECKING:
    from airflow.sdk import Context


class SubmitOnceMixin:
    """Needs, from the operator: ``client``, ``_request``, ``_deadline``, ``_jobs``, ``deferrable``,
    ``on_clear``, ``on_ambiguous_submission``, ``on_daily_limit``, ``log`` and ``defer``."""

    if TYPE_CHECKING:

        @property
        def client(self) -> DoitongClient: ...

    _request: ImageRequest
    _deadline: float | None
    _jobs: dict[str, Job]
    deferrable: bool
    on_clear: str
    on_ambiguous_submission: str
    on_daily_limit: str
    doitong_conn_id: str
    log: Any
    defer: Any

    # --- the task state store (one place, so it can be routed elsewhere) ------------------
    def _load_record(self, context: Context) -> Any:
        store = task_state_store(context)
        if store is None:
            self.log.warning("No task state store: a retry cannot reattach to this try's job")
            return None
        return store.get(submission.STATE_KEY)

    def _save_record(
        self, context: Context, state: RecordState, job_id: str | None = None, *, refusals: int = 0
    ) -> None:
        store = task_state_store(context)
        if store is not None:
            record = Record(
                state=state,
                fingerprint=fingerprint(self._request),
                job_id=job_id,
                at=time.time(),
                refusals=refusals,
            )
            store.set(submission.STATE_KEY, record.to_json())

    def _forget_record(self, context: Context) -> None:
        store = task_state_store(context)
        if store is not None:
            store.delete(submission.STATE_KEY)

    def _resume_step(self, context: Context) -> Step:
        """What this try does with what earlier tries left: submit, wait, or reuse a completed job."""
        step = submission.plan(
            self._load_record(context),
            request=self._request,
            on_clear=self.on_clear,
        )
        if step.action is Action.READ:
            assert step.job_id is not None
            try:
                read: Job | None | DoitongError = self.client.get_job(step.job_id)
            except DoitongError as exc:
                read = exc
            try:
                step = submission.after_read(step.job_id, read)
            except DoitongError as exc:
                raise airflow_error(
                    exc, doing=f"Reading Doitong job {step.job_id} failed", conn_id=self.doitong_conn_id
                ) from None
        if step.action is Action.AMBIGUOUS:
            step = self._after_ambiguous_submission(step)
        self.log.info("Doitong: %s; %s", step.reason, step.action.value)
        return step

    def _after_ambiguous_submission(self, step: Step) -> Step:
        if self.on_ambiguous_submission == "fail":
            raise AirflowFailException(
                f"Doitong: {step.reason}, so a job may exist and be charged, and the API cannot tell. "
                "Nothing was submitted again (on_ambiguous_submission='fail'); check the account's "
                "jobs, then run the task with on_ambiguous_submission='resubmit' to submit again"
            )
        self.log.warning(
            "Doitong: %s; submitting again (on_ambiguous_submission='resubmit'): this may be a second "
            "charge for the same image",
            step.reason,
        )
        return Step(Action.SUBMIT, "resubmitting after a lost answer")

    def _submit(self, context: Context, attempt: int) -> Job:
        """Submit, keeping the record; wait out refusals that prove no job was made (429, no connection)."""
        request = self._request
        # 429s and refused connections are waited out here (deferring, so no worker slot is held).
        policy = dataclasses.replace(self.client.retry_policy, max_rate_limit_wait=0)
        while True:
            attempt += 1
            self._save_record(context, RecordState.SUBMITTING)
            try:
                job = self.client.submit(request, retry_policy=policy)
                break
            except DoitongError as exc:
                if submission.may_have_created_job(exc):
                    raise airflow_error(
                        exc, doing="Its outcome is unknown, a job may exist", conn_id=self.doitong_conn_id
                    ) from None
                if not resubmit_after_wait(exc, on_daily_limit=self.on_daily_limit):
                    self._forget_record(context)
                    raise airflow_error(
                        exc, on_daily_limit=self.on_daily_limit, conn_id=self.doitong_conn_id
                    ) from None
                # No job exists; the count outlives a deferral even where its kwargs are lost.
                self._save_record(context, RecordState.REFUSED, refusals=attempt)
                self._wait_before_resubmitting(exc, attempt)
        self._save_record(context, RecordState.SUBMITTED, job.id)
        self._jobs[job.id] = job
        self.log.info(
            "Submitted Doitong job %s (%s, %dx%d, %s; estimated %d credits)",
            job.id,
            request.provider,
            request.width,
            request.height,
            request.quality,
            request.estimated_credits,
        )
        return job

    def _wait_before_resubmitting(self, exc: DoitongError, attempt: int) -> None:
        now = time.time()
        resume_at = now + compute_wait(exc, attempt=attempt, policy=self.client.retry_policy, now=now)
        if self._deadline is not None and resume_at > self._deadline:
            late = DoitongTimeout(f"Doitong refuses the submission past the task's deadline: {exc}")
            raise airflow_error(late) from None
        self.log.warning("Doitong refused the submission (%s); trying again at %s", exc, utc_iso(resume_at))
        if self.deferrable and resume_at - now >= SHORTEST_DEFERRAL_S:
            self.defer(
                trigger=DateTimeTrigger(moment=datetime.fromtimestamp(resume_at, tz=timezone.utc)),
                method_name="execute",
                kwargs={"deadline": self._deadline, "attempt": attempt},
            )
        time.sleep(max(0.0, resume_at - now))


#: A shorter wait is slept in the worker even by a deferrable task: a deferral costs a task process
#: start (seconds), and a trigger that fires before the executor has reported the deferring
#: process's exit makes Airflow fail the try ("task state changed externally").
SHORTEST_DEFERRAL_S = 5.0
