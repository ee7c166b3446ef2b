"""Submitting one image at most once per request, for one try of ``FluxGenerateOperator``.

The decisions are :mod:`~airflow_provider_doitong.client.submission`'s, and so is the record in the
task state store (:class:`~airflow_provider_doitong.client.submission.Records`). A
:class:`Submitter` moves their inputs and outputs: the job read back, the POST itself, and the wait
after a refusal that proves no job was made: slept here, or handed back as :class:`Refused` for
the operator to wait out in the triggerer.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from airflow_provider_doitong._compat import DEFERRAL_SETTLE_S, AirflowFailException, deferral_settle_s
from airflow_provider_doitong.batch.budget import below_floor, within_floor
from airflow_provider_doitong.client import (
    DoitongClient,
    DoitongError,
    DoitongTimeout,
    ImageRequest,
    Job,
)
from airflow_provider_doitong.client.errors import was_held
from airflow_provider_doitong.client.outcomes import resubmit_after_wait
from airflow_provider_doitong.client.retry import compute_wait
from airflow_provider_doitong.client.submission import (
    Action,
    Records,
    RecordState,
    Step,
    after_read,
    may_have_created_job,
)
from airflow_provider_doitong.client.times import utc_iso
from airflow_provider_doitong.operators.airflow_errors import airflow_error

#: A shorter wait is slept in the worker even by a deferrable task, by default: a deferral costs a
#: task process start (seconds), and a resume sooner than this after the deferral may make Airflow
#: fail the try (:func:`~airflow_provider_doitong._compat.deferral_settle_s`, in force).
SHORTEST_DEFERRAL_S = DEFERRAL_SETTLE_S


#: Why a submission held unsent on this host waits past the deadline, by the hold's code.
_HELD_PAST_DEADLINE = {
    "RATE_LIMITED": "the account's window stays spent",
    "CONCURRENCY_LIMIT": "the account's job slots stay taken on this host",
}


@dataclass(frozen=True)
class Refused:
    """Submissions refused in a way that proves no job was made: submit again at ``resume_at``.

    :param attempt: the refusals in a row so far, so the backoff keeps growing.
    """

    resume_at: float
    attempt: int


@dataclass(kw_only=True)
class Submitter:
    """One try's submission of ``request``: what earlier tries left, the POST, the refusals.

    :param records: the task's record of this request's submission.
    :param conn_id: the connection, named in a refused key's message.
    :param deadline: the Unix time past which a refusal is not waited out.
    :param may_defer: a wait of ``shortest_deferral`` or more is handed back as :class:`Refused`
        rather than slept.
    :param shortest_deferral: the shortest refusal wait worth a deferral (at least
        :data:`SHORTEST_DEFERRAL_S`; a task's ``min_defer_seconds`` if longer).
    :param credit_floor: the balance the submission must leave the account at (``None``: none).
    """

    client: DoitongClient
    request: ImageRequest
    records: Records
    conn_id: str
    on_clear: str
    on_ambiguous_submission: str
    on_daily_limit: str
    deadline: float | None
    may_defer: bool
    log: Any
    credit_floor: int | None = None
    shortest_deferral: float = SHORTEST_DEFERRAL_S

    def first_step(self) -> Step:
        """What this try does with what earlier tries left: submit, wait, or reuse a completed job."""
        if self.records.store is None:
            self.log.warning("No task state store: a retry cannot reattach to this try's job")
        step = self.records.plan(on_clear=self.on_clear)
        if step.action is Action.READ:
            assert step.job_id is not None
            try:
                read: Job | None | DoitongError = self.client.get_job(step.job_id)
            except DoitongError as exc:
                read = exc
            try:
                step = after_read(step.job_id, read)
            except DoitongError as exc:
                raise airflow_error(
                    exc, doing=f"Reading Doitong job {step.job_id} failed", conn_id=self.conn_id
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

    def submit(self, attempt: int) -> Job | Refused:
        """Submit, keeping the record; wait out refusals that prove no job was made (429, no connection).

        :param attempt: the refusals in a row before this call.
        :returns: the job, or :class:`Refused` when the next submission is worth a deferral.
        """
        request = self.request
        self._check_floor()
        # 429s and refused connections are waited out here (or deferred, holding no worker slot).
        policy = dataclasses.replace(self.client.retry_policy, max_rate_limit_wait=0)
        while True:
            attempt += 1
            self.records.save(RecordState.SUBMITTING)
            try:
                job = self.client.submit(request, retry_policy=policy)
                break
            except DoitongError as exc:
                refused = self._refused(exc, attempt)
                attempt = refused.attempt
            now = time.time()
            if self.may_defer and refused.resume_at - now >= max(deferral_settle_s(), self.shortest_deferral):
                return refused
            time.sleep(max(0.0, refused.resume_at - now))
        self.records.save(RecordState.SUBMITTED, job.id)
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

    def _check_floor(self) -> None:
        """Refuse, before the credit is spent, a job that would take the account below the floor."""
        if self.credit_floor is None:
            return
        try:
            balance = self.client.get_account().credits
        except DoitongError as exc:
            raise airflow_error(
                exc,
                on_daily_limit=self.on_daily_limit,
                doing="Reading the Doitong account's balance failed",
                conn_id=self.conn_id,
            ) from None
        estimate = self.request.estimated_credits
        if within_floor(balance=balance, floor=self.credit_floor, estimates=[estimate]) == 0:
            self.records.forget()
            raise AirflowFailException(
                f"Doitong: nothing was submitted: {below_floor(balance=balance, floor=self.credit_floor, estimate=estimate)}"
            )

    def _refused(self, exc: DoitongError, attempt: int) -> Refused:
        """When to submit again after ``exc``; raises Airflow's exception when not at all."""
        if may_have_created_job(exc):
            raise airflow_error(
                exc, doing="Its outcome is unknown, a job may exist", conn_id=self.conn_id
            ) from None
        if not resubmit_after_wait(exc, on_daily_limit=self.on_daily_limit):
            self.records.forget()
            raise airflow_error(exc, on_daily_limit=self.on_daily_limit, conn_id=self.conn_id) from None
        held = was_held(exc)  # never sent: not a refusal
        refusals = attempt - 1 if held else attempt
        # No job exists; the count outlives a deferral even where its kwargs are lost.
        self.records.save(RecordState.REFUSED, refusals=refusals)
        now = time.time()
        resume_at = now + compute_wait(exc, attempt=attempt, policy=self.client.retry_policy, now=now)
        if self.deadline is not None and resume_at > self.deadline:
            why = _HELD_PAST_DEADLINE.get(exc.code or "", "") if held else ""
            why = why or "Doitong refuses the submission"
            raise airflow_error(DoitongTimeout(f"{why} past the task's deadline: {exc}")) from None
        what = "Held the submission" if held else "Doitong refused the submission"
        (self.log.info if held else self.log.warning)(
            "%s (%s); trying again at %s", what, exc, utc_iso(resume_at)
        )
        return Refused(resume_at, refusals)
