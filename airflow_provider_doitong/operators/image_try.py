"""One try of ``FluxGenerateOperator``, from what earlier tries left to the image stored.

The operator holds the parameters and Airflow's entry points; an :class:`ImageTry` carries out one
try with the request they checked: the first step (:class:`~airflow_provider_doitong.operators.submitter.Submitter`),
the output folder and the image cache before the first credit, the wait (in the worker, or in the
triggerer through the operator's ``defer``), then the finished job's image stored and announced.
What the try learns (its jobs, where the image went, the link, the result) it keeps on the operator,
where lineage, the link and ``on_kill`` read it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from airflow.providers.standard.triggers.temporal import DateTimeTrigger

from airflow_provider_doitong._compat import AirflowFailException, deferral_settle_s, task_state_store
from airflow_provider_doitong.client import DoitongError, ImageRequest, Job, contract
from airflow_provider_doitong.client.models import parse_api_time
from airflow_provider_doitong.client.redaction import redact
from airflow_provider_doitong.client.submission import Action, Records, RecordState, job_result
from airflow_provider_doitong.operators import image_cache
from airflow_provider_doitong.operators.airflow_errors import airflow_error
from airflow_provider_doitong.operators.outputs import (
    announce,
    check_output,
    observe_end,
    read_job,
    store_completed,
)
from airflow_provider_doitong.operators.submitter import Refused, Submitter
from airflow_provider_doitong.storage import Location
from airflow_provider_doitong.triggers.doitong import DoitongJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_doitong.client import DoitongClient
    from airflow_provider_doitong.hooks.doitong import DoitongHook
    from airflow_provider_doitong.storage.cache import ImageCache


class ImageTask(Protocol):
    """What a try reads of ``FluxGenerateOperator`` (its parameters, hook, client, log and ``defer``)
    and what it keeps there, for lineage, the image's link and ``on_kill``."""

    image_url: str | None
    stored_image: str | None
    _stored: Location | None
    _result: dict[str, Any] | None

    @property
    def hook(self) -> DoitongHook: ...
    @property
    def client(self) -> DoitongClient: ...
    @property
    def log(self) -> Any: ...
    @property
    def outlets(self) -> Any: ...
    @property
    def doitong_conn_id(self) -> str: ...
    @property
    def on_clear(self) -> str: ...
    @property
    def on_ambiguous_submission(self) -> str: ...
    @property
    def on_daily_limit(self) -> str: ...
    @property
    def deferrable(self) -> bool: ...
    @property
    def wait_for_completion(self) -> bool: ...
    @property
    def poll_interval(self) -> float: ...
    @property
    def min_defer_seconds(self) -> float: ...
    @property
    def max_credits(self) -> int | None: ...
    @property
    def credit_floor(self) -> int | None: ...
    @property
    def cache_path(self) -> str | None: ...
    @property
    def cache_max_age(self) -> float | timedelta | None: ...
    @property
    def cache_refresh(self) -> bool: ...
    @property
    def _jobs(self) -> dict[str, Job]: ...
    @property
    def _secrets(self) -> tuple[str, ...]: ...

    def defer(
        self,
        *,
        trigger: BaseTrigger,
        method_name: str,
        kwargs: dict[str, Any] | None = None,
        timeout: timedelta | int | float | None = None,
    ) -> NoReturn: ...


@dataclass(kw_only=True)
class ImageTry:
    """One try of ``task`` for ``request``.

    :param output: ``output_path`` as rendered, parsed once (``None`` without one).
    :param deadline: the Unix time the wait ends at (``None``: no limit), carried across deferrals.
    """

    task: ImageTask
    context: Context
    request: ImageRequest
    output: Location | None
    deadline: float | None

    @property
    def records(self) -> Records:
        """The task's record of this request's submission, in its task state store."""
        return Records(task_state_store(self.context), self.request)

    def run(self, attempt: int) -> Any:
        """Submit (or reattach to, or reuse) the job, then wait as the task is configured to.

        :param attempt: refused submissions in a row so far (carried across a deferral).
        """
        task = self.task
        submitter = Submitter(
            client=task.client,
            request=self.request,
            records=self.records,
            conn_id=task.doitong_conn_id,
            on_clear=task.on_clear,
            on_ambiguous_submission=task.on_ambiguous_submission,
            on_daily_limit=task.on_daily_limit,
            deadline=self.deadline,
            may_defer=task.deferrable,
            shortest_deferral=task.min_defer_seconds,
            log=task.log,
            credit_floor=task.hook.credit_floor(task.credit_floor),
        )
        step = submitter.first_step()
        if step.action is Action.SUBMIT:
            return self._submit(submitter, max(attempt, step.refusals))
        assert step.job_id is not None
        if step.job is not None:
            task._jobs[step.job_id] = step.job
            task.log.info("Found Doitong job %s from an earlier try: %s", step.job_id, step.job.raw_status)
        if step.action is Action.FINISH:
            assert step.job is not None
            return self.finish(step.job, reused=True)
        return self._wait(step.job_id, step.job)

    def _submit(self, submitter: Submitter, attempt: int) -> Any:
        """The output folder and the image cache checked before the first credit, then the POST."""
        task = self.task
        if self.output is not None:  # before the first credit: a folder that takes the image
            check_output(self.context, self.output, whole_folder=False)
        cache = self.cache()
        problem = image_cache.max_credits_problem(cache, self.request, task.max_credits)
        if problem is not None:
            raise AirflowFailException(problem)
        if cache is not None:  # before the first credit too: the image may be there already
            hit = image_cache.before_submit(
                cache, self.request, self.context, deadline=self.deadline, log=task.log
            )
            if hit is not None:
                assert self.output is not None
                task._stored, result = image_cache.store_hit(hit, self.request, self.output, self.context)
                task.stored_image = task._stored.shown
                return self._announce(redact(result, task._secrets))
        try:
            job = submitter.submit(attempt)
        except Exception:  # nothing was made: another task may make it
            self.release_claim()
            raise
        if isinstance(job, Refused):
            task.defer(
                trigger=DateTimeTrigger(moment=datetime.fromtimestamp(job.resume_at, tz=timezone.utc)),
                method_name="resume_submission",
                kwargs={"deadline": self.deadline, "attempt": job.attempt},
            )
        task._jobs[job.id] = job
        return self._wait(job.id, job, submitted_at=time.time())

    def _wait(self, job_id: str, job: Job | None, *, submitted_at: float | None = None) -> dict[str, Any]:
        """Wait for the job: not at all, in the triggerer (the task defers), or polling here.

        :param submitted_at: when this try submitted the job (``None``: an earlier try did): a
            deferrable task waits here until it has run ``min_defer_seconds``.
        """
        task = self.task
        if not task.wait_for_completion:
            return self.finish(job or read_job(task.client, job_id, conn_id=task.doitong_conn_id))
        if task.deferrable:
            if submitted_at is not None and task.min_defer_seconds > 0:
                done = self._poll_here(job_id, hand_over_at=submitted_at + task.min_defer_seconds)
                if done is not None:
                    return self.finish(done)
            backstop = None if self.deadline is None else timedelta(seconds=self.deadline - time.time() + 60)
            task.defer(
                trigger=DoitongJobTrigger(
                    job_id=job_id,
                    doitong_conn_id=task.doitong_conn_id,
                    poll_interval=task.poll_interval,
                    deadline=self.deadline,
                    not_before=time.time() + deferral_settle_s(),
                    started_at=started_at(job, submitted_at),
                ),
                method_name="execute_complete",
                timeout=backstop,
            )
        done = self._poll_here(job_id)
        assert done is not None
        return self.finish(done)

    def _poll_here(self, job_id: str, *, hand_over_at: float | None = None) -> Job | None:
        """The job completed, polled from the worker (``None``: still running at ``hand_over_at``)."""
        task = self.task
        started = time.monotonic()
        try:
            if hand_over_at is None:
                done: Job | None = task.client.wait_for_job(
                    job_id,
                    poll_interval=task.poll_interval,
                    deadline=self.deadline,
                    refresh_key=task.hook.current_api_key,
                )
            else:
                done = task.client.wait_while_young(
                    job_id,
                    until=hand_over_at,
                    poll_interval=task.poll_interval,
                    deadline=self.deadline,
                    refresh_key=task.hook.current_api_key,
                )
        except DoitongError as exc:
            observe_end(task.client, job=None, error=exc, model=self.request.provider)
            self.release_claim()
            raise airflow_error(
                exc, doing=f"Waiting for Doitong job {job_id} failed", conn_id=task.doitong_conn_id
            ) from None
        if done is not None:
            task.log.info("Doitong job %s completed after %.1fs", job_id, time.monotonic() - started)
        else:
            task.log.info(
                "Doitong job %s still runs after %.1fs: deferring", job_id, time.monotonic() - started
            )
        return done

    def finish(self, job: Job, *, reused: bool = False) -> dict[str, Any]:
        """Store a completed job's image and return the task's result.

        :param reused: the job was paid for by an earlier try; this try is charged nothing.
        """
        task = self.task
        output: str | None = None
        if job.status is contract.JobStatus.COMPLETED:
            try:
                stored, task.image_url = store_completed(
                    task.client,
                    job,
                    request=self.request,
                    reused=reused,
                    max_credits=task.max_credits,
                    location=self.output,
                    context=self.context,
                    log=task.log,
                )
            except AirflowFailException:  # no try stores it: another task may make the image
                self.release_claim()
                raise
            if stored is not None:
                task._stored = stored
                output = task.stored_image = stored.shown
            self.records.save(RecordState.STORED, job.id)
            cache = self.cache()
            if cache is not None:
                image_cache.after_store(cache, self.request, job, task._stored, self.context)
        result = redact(job_result(job, prompt=self.request.prompt, output_path=output), task._secrets)
        return self._announce(result)

    def cache(self) -> ImageCache | None:
        """The image cache, where the task stores its image (and waits for it); else ``None``."""
        task = self.task
        if self.output is None or not task.wait_for_completion:
            return None
        return image_cache.open_cache(
            task.hook, task.cache_path, max_age=task.cache_max_age, refresh=task.cache_refresh
        )

    def release_claim(self) -> None:
        """Release this task's claim on its image's key; never raises over the task's own error."""
        try:
            cache = self.cache()
            if cache is not None:
                cache.release(self.request, image_cache.claimant(self.context))
        except Exception as exc:
            self.task.log.warning("Could not release the image cache's claim: %s", exc)

    def _announce(self, result: dict[str, Any]) -> dict[str, Any]:
        announce(self.context, self.task.outlets, result)
        self.task._result = result
        return result


def started_at(job: Job | None, submitted_at: float | None) -> float | None:
    """When the job started, for its trigger's first read: when this try submitted it, else (a job
    of an earlier try) the API's ``createdAt``, never later than now (``None``: unknown)."""
    if submitted_at is not None:
        return submitted_at
    created = parse_api_time(job.created_at) if job is not None else None
    return None if created is None else min(created, time.time())
