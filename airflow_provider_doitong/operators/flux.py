"""``FluxGenerateOperator``: submit one image to Doitong, wait for it, and store it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.triggers.temporal import DateTimeTrigger
from airflow.sdk import Asset, BaseOperator, ResumableJobMixin, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

from airflow_provider_doitong import contract, events, lineage
from airflow_provider_doitong.client import (
    DoitongBadRequest,
    DoitongClient,
    DoitongError,
    DoitongInsufficientCredits,
    DoitongJobFailed,
    DoitongRateLimited,
    DoitongTimeout,
    DoitongUnauthorized,
    DoitongValidationError,
    ImageRequest,
    Job,
    RetryPolicy,
)
from airflow_provider_doitong.client.models import image_side
from airflow_provider_doitong.client.retry import backoff
from airflow_provider_doitong.connection import DEFAULT_CONN_ID, ConnectionSettings, DoitongConnectionInvalid
from airflow_provider_doitong.hooks.doitong import DoitongHook
from airflow_provider_doitong.links import DoitongImageLink
from airflow_provider_doitong.operators.outputs import fetch_and_store, link_url
from airflow_provider_doitong.triggers.doitong import DoitongJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Statuses ``get_job_status`` reports besides the API's own.
NOT_FOUND_STATUS = "not_found"
DAILY_LIMIT_ACTIONS = ("fail", "wait")


def _seconds(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def job_result(job: Job, *, prompt: str, output_path: str | None) -> dict[str, Any]:
    """The operator's XCom value: plain JSON.

    :param job: the job as last read.
    :param prompt: the prompt sent.
    :param output_path: where the image was written, if anywhere.
    """
    return {
        "job_id": job.id,
        "status": job.status.value,
        "url": job.url,
        "width": job.width,
        "height": job.height,
        "credit_cost": job.credit_cost,
        "provider": job.provider,
        "prompt": prompt,
        "output_path": output_path,
        "created_at": job.created_at,
        "completed_at": job.completed_at,
    }


class FluxGenerateOperator(ResumableJobMixin, BaseOperator):
    """Generate an image with Doitong's ``flux-krea`` or ``flux-dev`` model.

    Every input is checked against the contract before any request is sent. The job id is kept in
    the task's state store right after submission, so a retry, a worker crash or a triggerer restart
    reattaches to the same job instead of paying for it twice.

    :param prompt: the text (templated; a ``.txt`` file is read as a template).
    :param provider: ``flux-krea`` or ``flux-dev`` (templated).
    :param width: pixels, a multiple of 16 from 256 to 4096 (templated).
    :param height: pixels, likewise (templated).
    :param quality: ``standard`` or ``high`` (templated).
    :param version: the model version; defaults to the provider (templated).
    :param webhook_url: where Doitong POSTs the finished job (templated).
    :param doitong_conn_id: the ``doitong`` connection.
    :param wait_for_completion: wait for the job; if False, return right after submission.
    :param deferrable: wait in the triggerer, holding no worker slot.
    :param poll_interval: the longest wait between two status polls, in seconds.
    :param timeout: a deadline for the wait (and for rate-limit waits), in seconds or a timedelta;
        the job keeps running at Doitong past it.
    :param output_path: where to store the image (templated): a local path or an
        ``ObjectStoragePath`` URI; a folder (ends with ``/`` or exists) gets ``<job_id>.<ext>``, the
        extension from the image's bytes and an unsafe job id mapped to a safe name.
    :param max_credits: refuse to submit when the estimated cost exceeds this.
    :param on_daily_limit: on 429 ``DAILY_LIMIT``, ``fail`` at once or ``wait`` for the reset.
    """

    template_fields: Sequence[str] = (
        "prompt",
        "provider",
        "width",
        "height",
        "quality",
        "version",
        "webhook_url",
        "output_path",
    )
    template_ext: Sequence[str] = (".txt",)
    template_fields_renderers = {"prompt": "md"}
    operator_extra_links = (DoitongImageLink(),)
    ui_color = "#e8d7ff"
    external_id_key = "doitong_job_id"

    def __init__(
        self,
        *,
        prompt: str,
        provider: str = "flux-krea",
        width: int | str = contract.DEFAULT_WIDTH,
        height: int | str = contract.DEFAULT_HEIGHT,
        quality: str = contract.DEFAULT_QUALITY,
        version: str | None = None,
        webhook_url: str | None = None,
        doitong_conn_id: str = DEFAULT_CONN_ID,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 5.0,
        timeout: float | timedelta | None = 3600.0,
        output_path: str | None = None,
        max_credits: int | None = None,
        on_daily_limit: str = "fail",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_daily_limit not in DAILY_LIMIT_ACTIONS:
            raise ValueError(f"on_daily_limit must be one of {DAILY_LIMIT_ACTIONS}, got {on_daily_limit!r}")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.prompt = prompt
        self.provider = provider
        self.width = width
        self.height = height
        self.quality = quality
        self.version = version
        self.webhook_url = webhook_url
        self.doitong_conn_id = doitong_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = _seconds(timeout)
        self.output_path = output_path
        self.max_credits = max_credits
        self.on_daily_limit = on_daily_limit
        self._deadline: float | None = None
        self._jobs: dict[str, Job] = {}
        self._result: dict[str, Any] | None = None
        #: The finished image's URL, for the "Doitong image" link.
        self.image_url: str | None = None

    # --- set-up: everything checked before any request -----------------------------------
    @cached_property
    def hook(self) -> DoitongHook:
        return DoitongHook(doitong_conn_id=self.doitong_conn_id)

    @cached_property
    def client(self) -> DoitongClient:
        return self.hook.get_conn()

    def _image_request(self) -> ImageRequest:
        try:
            request = ImageRequest(
                provider=self.provider,
                prompt=self.prompt,
                width=image_side("width", self.width),
                height=image_side("height", self.height),
                quality=self.quality,
                version=self.version or None,
                webhook_url=self.webhook_url or None,
            )
        except DoitongValidationError as exc:
            raise AirflowFailException(f"Invalid Doitong request: {exc.message}") from None
        if self.max_credits is not None and request.estimated_credits > self.max_credits:
            raise AirflowFailException(
                f"This image is estimated at {request.estimated_credits} credits, over max_credits="
                f"{self.max_credits}; nothing was submitted"
            )
        return request

    def _check_connection(self) -> ConnectionSettings:
        try:
            return self.hook.settings
        except AirflowNotFoundException:
            raise AirflowFailException(
                f"The Doitong connection {self.doitong_conn_id!r} is not defined"
            ) from None
        except DoitongConnectionInvalid as exc:
            raise AirflowFailException(f"Invalid Doitong connection: {exc}") from None

    def _prepare(self, deadline: float | None) -> ImageRequest:
        request = self._image_request()
        self._check_connection()
        if deadline is not None:
            self._deadline = deadline
        elif self.timeout is not None:
            self._deadline = time.time() + self.timeout
        return request

    # --- entry points -------------------------------------------------------------------
    def execute(
        self, context: Context, event: dict[str, Any] | None = None, deadline: float | None = None
    ) -> Any:
        """Submit (or reattach to) the job, then wait as configured.

        :param context: the task context.
        :param event: set when resumed after a rate-limit wait.
        :param deadline: the wait's deadline, carried across a rate-limit deferral.
        """
        self._request = self._prepare(deadline)
        try:
            return self.execute_resumable(context)
        finally:
            self._close()

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after :class:`DoitongJobTrigger` fired: check its event, fetch and store the image."""
        try:
            status, job_id, job, message = events.read_event(event)
        except events.InvalidTriggerEvent as exc:
            raise AirflowException(str(exc)) from None
        if status != events.SUCCESS or job is None:
            raise AirflowException(message)
        self._request = self._image_request()
        try:
            return self._finish(job, context)
        finally:
            self._close()

    # --- OpenLineage (called by its listener only; lineage.py imports OpenLineage) -----------
    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The stored image as an output, the prompt template file as an input, a ``doitong`` run facet."""
        return lineage.generate_operator_lineage(self)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """As on completion, with no image output and no credits (nothing was stored)."""
        return lineage.generate_operator_lineage(self, failed=True)

    def resolve_template_files(self) -> None:
        # Keep the prompt template file's name for lineage before Airflow replaces it with the text.
        self.prompt_file = lineage.template_file(self, "prompt")
        super().resolve_template_files()

    def on_kill(self) -> None:
        job_ids = ", ".join(self._jobs) or "none submitted yet"
        self.log.warning(
            "Killed while waiting; the API has no cancel, so Doitong jobs keep running and are charged (%s)",
            job_ids,
        )

    def _close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
            del self.__dict__["client"]

    # --- ResumableJobMixin --------------------------------------------------------------
    def submit_job(self, context: Context) -> str:
        request = self._request
        # 429s are handled here (deferring, so no worker slot is held), not by sleeping in the client.
        policy = RetryPolicy(max_rate_limit_wait=0)
        attempt = 0
        while True:
            attempt += 1
            try:
                job = self.client.submit(request, retry_policy=policy)
                break
            except DoitongRateLimited as exc:
                self._wait_for_rate_limit(exc, attempt)
            except DoitongInsufficientCredits as exc:
                raise AirflowFailException(
                    f"Not enough Doitong credits: this image needs {exc.credits_required}, the account has "
                    f"{exc.credits_available}"
                ) from None
            except (DoitongBadRequest, DoitongUnauthorized) as exc:
                raise AirflowFailException(str(exc)) from None
            except DoitongError as exc:
                raise AirflowException(f"Doitong submission failed: {exc}") from None
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
        return job.id

    def _wait_for_rate_limit(self, exc: DoitongRateLimited, attempt: int) -> None:
        if exc.is_daily_limit and self.on_daily_limit == "fail":
            raise AirflowFailException(
                f"The Doitong daily limit is reached; it resets at "
                f"{_iso(exc.retry_at) if exc.retry_at else 'the next UTC midnight'}: {exc.message}"
            ) from None
        now = time.time()
        resume_at = exc.retry_at if exc.retry_at is not None else now + backoff(RetryPolicy(), attempt)
        if self._deadline is not None and resume_at > self._deadline:
            raise AirflowException(
                f"Doitong is rate limiting past the task's deadline: {exc.message}"
            ) from None
        self.log.warning("Doitong refused the submission (%s); retrying at %s", exc.code, _iso(resume_at))
        if self.deferrable:
            self.defer(
                trigger=DateTimeTrigger(moment=datetime.fromtimestamp(resume_at, tz=timezone.utc)),
                method_name="execute",
                kwargs={"deadline": self._deadline},
            )
        time.sleep(max(0.0, resume_at - now))

    def get_job_status(self, external_id: Any, context: Context) -> str:
        job = self.client.get_job(str(external_id))
        if job is None:
            return NOT_FOUND_STATUS
        self._jobs[job.id] = job
        self.log.info("Found Doitong job %s from an earlier try: %s", job.id, job.raw_status)
        return job.raw_status or contract.JobStatus.UNKNOWN.value

    def is_job_active(self, status: str) -> bool:
        return status != NOT_FOUND_STATUS and not contract.JobStatus.parse(status).is_terminal

    def is_job_succeeded(self, status: str) -> bool:
        return contract.JobStatus.parse(status) is contract.JobStatus.COMPLETED

    # Returns the result: the mixin returns what this returns when it reattaches to a running job
    # (its annotation says None).
    def poll_until_complete(self, external_id: Any, context: Context) -> dict[str, Any]:  # type: ignore[override]
        job_id = str(external_id)
        if not self.wait_for_completion:
            return self._finish(self._jobs.get(job_id) or self._read_job(job_id), context)
        if self.deferrable:
            backstop = (
                None if self._deadline is None else timedelta(seconds=self._deadline - time.time() + 60)
            )
            self.defer(
                trigger=DoitongJobTrigger(
                    job_id=job_id,
                    doitong_conn_id=self.doitong_conn_id,
                    poll_interval=self.poll_interval,
                    deadline=self._deadline,
                ),
                method_name="execute_complete",
                timeout=backstop,
            )
        started = time.monotonic()
        try:
            job = self.client.wait_for_job(job_id, poll_interval=self.poll_interval, deadline=self._deadline)
        except (DoitongJobFailed, DoitongTimeout) as exc:
            raise AirflowException(str(exc)) from None
        except DoitongError as exc:
            raise AirflowException(f"Waiting for Doitong job {job_id} failed: {exc}") from None
        self.log.info("Doitong job %s completed after %.1fs", job_id, time.monotonic() - started)
        return self._finish(job, context)

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        job_id = str(external_id)
        if self._result is not None and self._result["job_id"] == job_id:
            return self._result
        return self._finish(self._jobs.get(job_id) or self._read_job(job_id), context)

    def _read_job(self, job_id: str) -> Job:
        job = self.client.get_job(job_id)
        if job is None:
            raise AirflowException(f"Doitong job {job_id} does not exist")
        return job

    # --- the result ----------------------------------------------------------------------
    def _finish(self, job: Job, context: Context) -> dict[str, Any]:
        output: str | None = None
        if job.status is contract.JobStatus.COMPLETED:
            if job.credit_cost is not None:
                self.log.info("Doitong job %s charged %d credits", job.id, job.credit_cost)
            if self.output_path:
                output = self._store(job)
            self.image_url = link_url(self.client, job_id=job.id, url=job.url, log=self.log)
        result = job_result(job, prompt=self._request.prompt, output_path=output)
        for outlet in self.outlets or ():
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = result
        self._result = result
        return result

    def _store(self, job: Job) -> str:
        """Download the image (checked by the client) and write it (see :mod:`.outputs`)."""
        return fetch_and_store(
            self.client, job_id=job.id, url=job.url, location=str(self.output_path), log=self.log
        )


def _iso(unix_time: float) -> str:
    return datetime.fromtimestamp(unix_time, tz=timezone.utc).isoformat(timespec="seconds")
