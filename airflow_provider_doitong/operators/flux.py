"""``FluxGenerateOperator``: submit one image to Doitong, wait for it, and store it.

Here are its parameters, its checked request and Airflow's entry points; the course of one try
(submit or reattach, wait, store) is :class:`~airflow_provider_doitong.operators.image_try.ImageTry`'s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_doitong._compat import conf
from airflow_provider_doitong.client import DoitongClient, Job, contract, submission
from airflow_provider_doitong.client.outcomes import DAILY_LIMIT_ANSWERS, Role
from airflow_provider_doitong.client.submission import job_result
from airflow_provider_doitong.client.times import seconds
from airflow_provider_doitong.hooks.connection import DEFAULT_CONN_ID, read_credit_floor
from airflow_provider_doitong.hooks.doitong import DoitongHook
from airflow_provider_doitong.operators import inputs, lineage
from airflow_provider_doitong.operators.airflow_errors import airflow_error
from airflow_provider_doitong.operators.image_try import ImageTry
from airflow_provider_doitong.operators.links import DoitongImageLink
from airflow_provider_doitong.operators.outputs import observe_end
from airflow_provider_doitong.operators.prompt_files import prompt_file_location
from airflow_provider_doitong.storage import Location
from airflow_provider_doitong.triggers import events

if TYPE_CHECKING:
    from airflow.sdk import Context

#: ``job_result`` is documented here, where the operator's result is.
__all__ = ["FluxGenerateOperator", "job_result"]

DAILY_LIMIT_ACTIONS = tuple(DAILY_LIMIT_ANSWERS)


class FluxGenerateOperator(BaseOperator):
    """Generate an image with Doitong's ``flux-krea`` or ``flux-dev`` model.

    Every input is checked against the contract before any request is sent. The task keeps a
    record of its submission in its task state store (see :mod:`~airflow_provider_doitong.client.submission`):
    before the POST, with the job id right after it, and once the image is stored. A retry, a
    worker crash or a triggerer restart reattaches to the same job instead of paying for it twice;
    a job is reused only for the very request (model, prompt, size, quality, version) it was made for.

    :param prompt: the text (templated). A value ending in ``.txt`` is a prompt like any other.
    :param prompt_file: instead of ``prompt``, a file holding the prompt: a local path (relative to
        the DAG file's folder) or an ``ObjectStoragePath`` URI (the path is templated). Read at
        execute time as plain UTF-8 text and never rendered as a template: a prompt file is data.
    :param provider: ``flux-krea`` or ``flux-dev`` (templated).
    :param width: pixels, a multiple of 16 from 256 to 4096 (templated).
    :param height: pixels, likewise (templated).
    :param quality: ``standard`` or ``high`` (templated).
    :param version: the model version; defaults to the provider (templated).
    :param webhook_url: where Doitong POSTs the finished job (templated).
    :param doitong_conn_id: the ``doitong`` connection.
    :param wait_for_completion: wait for the job; if False, return right after submission.
    :param deferrable: wait in the triggerer, holding no worker slot.
    :param min_defer_seconds: deferrable mode first waits in the worker until the job has run this
        long (reading it every ``poll_interval``) and defers only if it still runs then (0, the
        default: defer at once). A short job then costs no resume (a task process start) and no
        resume moments after the deferral, when Airflow's scheduler can fail the resumed task
        (apache/airflow#72716); but each task reads its job itself, where the triggerer reads many
        tasks' jobs in one request: leave it at 0 where many tasks share a busy account's window.
        A refused submission's wait shorter than this (and any under 5 s) is slept in the worker too.
    :param poll_interval: the longest wait between two status polls, in seconds (stretched only to
        stay within the plan's rate, never under 0.25 s; see :mod:`~airflow_provider_doitong.client.pacing`).
    :param timeout: a deadline for the wait (and for rate-limit waits), in seconds or a timedelta;
        the job keeps running at Doitong past it. An unavailable API is waited out until then.
    :param cache_path: an image cache's folder, local or a URI (templated; default: the connection's
        ``cache_path`` extra): with an ``output_path``, an image already made for the same request
        is copied there for 0 credits, and a paid one is added (see :mod:`~airflow_provider_doitong.storage.cache`).
    :param cache_max_age: an entry older than this (seconds or a timedelta) is a miss.
    :param cache_refresh: ignore the cache's entries and fill it with a new image.
    :param output_path: where to store the image (templated): a local path or an
        ``ObjectStoragePath`` URI; a folder (ends with ``/`` or exists) gets ``<job_id>.<ext>``, the
        extension from the image's bytes and an unsafe job id mapped to a safe name.
    :param max_credits: refuse to submit when the estimated cost exceeds this. The charged cost is
        known only once the job is made: one over the estimate (or over ``max_credits``) is logged
        as a warning, and the image, paid for, is still stored.
    :param on_daily_limit: on 429 ``DAILY_LIMIT``: ``fail`` at once, ``skip`` the task, or ``wait``
        for the reset.
    :param credit_floor: credits the account keeps for other work: the task fails, submitting
        nothing, when the image's estimate would take the balance below this (read just before the
        submission). Default: the connection's ``credit_floor`` extra, if any.
    :param on_clear: when the task runs again after it succeeded (cleared) and its request did not
        change: ``reuse`` the paid image (fetched again, no charge) or ``regenerate`` a new one (a
        new charge). A changed request is always submitted anew.
    :param on_ambiguous_submission: when an earlier try sent the request and never got the answer
        (a 5xx, a dropped connection, a killed worker), so a job may exist and be charged: ``fail``
        the task without submitting, or ``resubmit`` with a warning that it may be a second charge.
    """

    template_fields: Sequence[str] = (
        "prompt",
        "prompt_file",
        "provider",
        "width",
        "height",
        "quality",
        "version",
        "webhook_url",
        "output_path",
        "cache_path",
    )
    #: No file is read as a template: a prompt file's text is data (see ``prompt_file``).
    template_ext: Sequence[str] = ()
    template_fields_renderers = {"prompt": "md"}
    operator_extra_links = (DoitongImageLink(),)
    ui_color = "#e8d7ff"

    # What a try keeps (its ImageTry sets them), for lineage and the "Doitong image" link.
    #: The task's result, as returned.
    _result: dict[str, Any] | None = None
    #: The connection's secrets, kept out of the XCom value, the asset event and lineage.
    _secrets: tuple[str, ...] = ()
    #: The finished image's URL, for the "Doitong image" link.
    image_url: str | None = None
    #: Where the image was stored, if anywhere (the link then opens the stored image).
    stored_image: str | None = None
    #: Where this try stored the image, if it did.
    _stored: Location | None = None

    def __init__(
        self,
        *,
        prompt: str | None = None,
        prompt_file: str | None = None,
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
        min_defer_seconds: float = 0.0,
        timeout: float | timedelta | None = 3600.0,
        output_path: str | None = None,
        max_credits: int | None = None,
        credit_floor: int | None = None,
        on_daily_limit: str = "fail",
        on_clear: str = "reuse",
        on_ambiguous_submission: str = "resubmit",
        cache_path: str | None = None,
        cache_max_age: float | timedelta | None = None,
        cache_refresh: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        inputs.check_arguments(
            one_of=(("prompt", prompt), ("prompt_file", prompt_file)),
            choices={
                "on_daily_limit": (on_daily_limit, DAILY_LIMIT_ACTIONS),
                "on_clear": (on_clear, submission.ON_CLEAR),
                "on_ambiguous_submission": (on_ambiguous_submission, submission.ON_AMBIGUOUS),
            },
        )
        if not poll_interval > 0:
            raise ValueError("poll_interval must be positive")
        if not min_defer_seconds >= 0:
            raise ValueError("min_defer_seconds must not be negative")
        self.prompt = prompt
        self.prompt_file = prompt_file
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
        self.min_defer_seconds = float(min_defer_seconds)
        self.timeout = seconds(timeout)
        self.output_path = output_path
        self.max_credits = max_credits
        self.on_daily_limit = on_daily_limit
        self.credit_floor = read_credit_floor(credit_floor)
        self.on_clear = on_clear
        self.on_ambiguous_submission = on_ambiguous_submission
        self.cache_path, self.cache_max_age, self.cache_refresh = cache_path, cache_max_age, cache_refresh
        #: The jobs this try submitted or found, for lineage and ``on_kill``.
        self._jobs: dict[str, Job] = {}

    # --- set-up: everything checked before any request -----------------------------------
    @cached_property
    def hook(self) -> DoitongHook:
        return DoitongHook(doitong_conn_id=self.doitong_conn_id)

    @cached_property
    def client(self) -> DoitongClient:
        return self.hook.get_conn()

    @property
    def prompt_location(self) -> str | None:
        """The prompt file read, as a full path or URI (``None`` for a ``prompt``)."""
        if self.prompt_file is None:
            return None
        return prompt_file_location(self.prompt_file, self._dag)

    def _start(self, context: Context, *, deadline: float | None) -> ImageTry:
        """A try of the request, checked before any request is sent; the connection is read first, so
        its secrets are masked in the log before anything could print them."""
        self._secrets = self.hook.checked_settings().secrets
        request = inputs.image_request(
            prompt=inputs.prompt_text(self.prompt, self.prompt_location),
            prompt_file=self.prompt_location if self.prompt_file else None,
            provider=self.provider,
            width=self.width,
            height=self.height,
            quality=self.quality,
            version=self.version,
            webhook_url=self.webhook_url,
            max_credits=None,  # checked before the submission, counting a cache hit at 0
            secrets=self._secrets,
            conn_id=self.doitong_conn_id,
        )
        output = Location.of(self.output_path) if self.output_path else None
        return ImageTry(task=self, context=context, request=request, output=output, deadline=deadline)

    # --- entry points -------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        """Submit (or reattach to, or reuse) the job, then wait as configured."""
        return self._try(context, deadline=None, attempt=0)

    def resume_submission(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        deadline: float | None = None,
        attempt: int = 0,
    ) -> Any:
        """Resume after a refused submission was waited out in the triggerer: submit again, then wait.

        :param event: the timer's event (nothing in it is read).
        :param deadline: the wait's deadline, carried across the deferral.
        :param attempt: refused submissions in a row so far, carried across the deferral, so the
            backoff keeps growing (the task state store's record keeps it too, where kwargs are lost).
        """
        return self._try(context, deadline=deadline, attempt=attempt)

    def _try(self, context: Context, *, deadline: float | None, attempt: int) -> Any:
        """One try: the request checked, the deadline set (carried, or from ``timeout``), then run."""
        one = self._start(context, deadline=deadline)
        if one.deadline is None and self.timeout is not None:
            one.deadline = time.time() + self.timeout
        try:
            return one.run(attempt)
        finally:
            self._close()

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after :class:`~airflow_provider_doitong.triggers.doitong.DoitongJobTrigger` fired:
        check its event, fetch and store the image."""
        try:
            status, job_id, job, message = events.read_event(event)
        except events.InvalidTriggerEvent as exc:
            raise airflow_error(exc) from None
        error = events.error_of(status, job_id, job, message)
        if error is not None:
            try:  # counting it never hides why the wait failed (an unreadable connection, say)
                observe_end(self.client, job=None, error=error, model=self.provider)
            except Exception:
                pass
            finally:
                self._close()
            self._release_after(context, error)
            raise airflow_error(error, role=Role.SUBMITTER, conn_id=self.doitong_conn_id)
        assert job is not None  # read_event checks a success carries its job
        one = self._start(context, deadline=None)
        try:
            return one.finish(job)
        finally:
            self._close()

    def _release_after(self, context: Context, error: Exception) -> None:
        """The trigger saw the job fail (or time out): release the claim the submitting try took."""
        try:
            one = self._start(context, deadline=None)
        except Exception:
            self.log.warning("Could not release the image cache's claim after: %s", error)
            return
        one.release_claim()

    # --- OpenLineage (called by its listener only; lineage.py imports OpenLineage) -----------
    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The stored image as an output, the prompt file as an input, a ``doitong`` run facet."""
        return lineage.to_operator_lineage(self.task_io(), self._secrets)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """As on completion, with no image output and no credits (nothing was stored)."""
        return lineage.to_operator_lineage(self.task_io(failed=True), self._secrets)

    def task_io(self, *, failed: bool = False) -> lineage.Lineage:
        """What this task read and wrote, and the jobs behind it, as it kept them.

        :param failed: the task failed: whatever result it holds is not reported as stored.
        """
        return lineage.image_lineage(
            result=None if failed else self._result,
            stored=None if failed else self._stored,
            job_ids=list(self._jobs),
            model=self.provider,
            width=self.width,
            height=self.height,
            quality=self.quality,
            prompt_file=self.prompt_location,
        )

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
