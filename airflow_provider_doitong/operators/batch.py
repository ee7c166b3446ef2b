"""``FluxBatchOperator``: a whole batch of prompts in one durable task, at the plan's pace."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

from airflow_provider_doitong._compat import AirflowFailException, conf, deferral_settle_s
from airflow_provider_doitong.batch import items as batch_items
from airflow_provider_doitong.batch.ledger import ItemState
from airflow_provider_doitong.batch.runner import BatchRunner, Defer
from airflow_provider_doitong.client import contract
from airflow_provider_doitong.client.outcomes import DAILY_LIMIT_ANSWERS
from airflow_provider_doitong.client.redaction import redact
from airflow_provider_doitong.client.submission import ON_AMBIGUOUS
from airflow_provider_doitong.client.times import seconds
from airflow_provider_doitong.hooks.connection import DEFAULT_CONN_ID, read_credit_floor
from airflow_provider_doitong.hooks.doitong import DoitongHook
from airflow_provider_doitong.operators import (
    batch_balance,
    batch_prior,
    batch_runner,
    batch_task,
    inputs,
    lineage,
    links,
    review,
)
from airflow_provider_doitong.operators.airflow_errors import airflow_error
from airflow_provider_doitong.operators.batch_runner import DEFAULT_RESUME_LEAD as DEFAULT_RESUME_LEAD
from airflow_provider_doitong.operators.outputs import announce, check_output
from airflow_provider_doitong.operators.prompt_files import prompt_file_location
from airflow_provider_doitong.storage import Location
from airflow_provider_doitong.triggers.batch import DoitongBatchTrigger
from airflow_provider_doitong.triggers.events import BATCH_ERROR, InvalidBatchEvent, read_batch_event

if TYPE_CHECKING:
    from airflow.sdk import Context


def _check_arguments(
    *,
    one_of: tuple[tuple[str, Any], tuple[str, Any]],
    choices: tuple[str, str],
    numbers: tuple[int, int, float, int | None],
) -> None:
    """Refuse, when the DAG is parsed, arguments no run could use.

    :param one_of: ``prompts`` and ``prompts_file``, by name: exactly one is given.
    :param choices: ``on_ambiguous_submission`` and ``on_daily_limit``.
    :param numbers: ``item_retries``, ``max_failed_items``, ``min_defer_seconds`` and ``concurrency``.
    :raises ValueError: for the first argument that breaks its rule.
    """
    on_ambiguous_submission, on_daily_limit = choices
    inputs.check_arguments(
        one_of=one_of,
        choices={
            "on_ambiguous_submission": (on_ambiguous_submission, ON_AMBIGUOUS),
            "on_daily_limit": (on_daily_limit, tuple(DAILY_LIMIT_ANSWERS)),
        },
    )
    item_retries, max_failed_items, min_defer_seconds, concurrency = numbers
    if item_retries < 0 or max_failed_items < 0 or min_defer_seconds < 0:
        raise ValueError("item_retries, max_failed_items and min_defer_seconds must not be negative")
    if concurrency is not None and concurrency < 1:
        raise ValueError("concurrency must be at least 1")


class FluxBatchOperator(BaseOperator):
    """Generate a batch of images with Doitong in one task: a day's prompts, at the plan's pace.

    Every item is checked, and the whole batch's estimated credits compared with ``max_credits``
    and the account's balance (the images the image cache holds counting 0), before anything is
    submitted. The batch keeps the plan's job slots
    full (a new job goes out as soon as one finishes) within its requests per minute, and reads
    every running job in one request just after the next of them is due. Each item's job id is in
    a ledger under ``output_path`` before anything else happens to it, so a retry, a worker crash
    or a triggerer restart resubmits nothing, stores what completed and goes on. Images are named
    by item (``0001-a-fox-in-the-snow.jpg``); ``manifest.json`` and ``index.html`` list them. The
    XCom value (and an outlet asset event's extra) is a summary, never the items.

    :param prompts: a list of prompts, or of items (dicts with ``prompt`` and any of ``provider``,
        ``width``, ``height``, ``quality``, ``version``); a string is read as a JSON list (templated).
    :param prompts_file: instead of ``prompts``, a file: one prompt per line (``#`` comments), or a
        ``.jsonl`` file of items; a local path (relative to the DAG file's folder) or an
        ``ObjectStoragePath`` URI (the path is templated; the file's text is data, never a template).
    :param output_path: the folder for the images, the manifest and the ledger: local or an
        ``ObjectStoragePath`` URI (templated). Give each run its own folder (e.g. ``.../{{ run_id }}/``).
    :param max_credits: refuse the batch when its estimated credits exceed this; while it runs, stop
        submitting once what Doitong really charged plus the estimate of the rest would exceed it
        (the images paid for are stored, then the task fails naming what was left unsubmitted).
    :param credit_floor: credits the account keeps for other work: nothing is submitted that would
        take its balance below this (read before the batch starts and before each submission wave;
        the task then fails naming what was left unsubmitted). Default: the connection's
        ``credit_floor`` extra, if any.
    :param concurrency: jobs at once; default the connection plan's concurrent jobs.
    :param item_retries: failed jobs an item may replace in one task try (failed jobs are refunded).
    :param max_failed_items: items that may fail for good before the batch stops and the task fails
        (after storing every finished image); fewer failures end the task successfully.
    :param deferrable: wait in the triggerer between completions, holding no worker slot.
    :param poll_interval: the longest gap between two status reads until the jobs' durations are
        learned, in seconds; after that the batch reads when its jobs are due to end. A run whose
        task's last successful run left its job durations in its result (``job_durations``, same
        model, size and quality) reads its first wave at their expected end (see
        :mod:`~airflow_provider_doitong.batch.prior`).
    :param timeout: how long one task try may wait, in seconds or a timedelta (``None``: no limit);
        jobs still running then keep running and the next try picks them up.
    :param on_ambiguous_submission: an item whose submission's answer was lost (a crash or a dropped
        connection after the POST) may have been charged: ``resubmit`` it (logged as a possible
        second charge and counted against ``item_retries``) or let it ``fail``, as for
        ``FluxGenerateOperator``.
    :param on_daily_limit: on 429 ``DAILY_LIMIT``: ``fail`` (stop submitting, store what runs, fail
        without retry), ``skip`` (the same, ending skipped) or ``wait`` for the reset and go on.
    :param min_defer_seconds: deferrable mode waits in the worker when the next job is due sooner
        than this plus the measured resume time: a resume costs a task process start.
    :param require_approval: once the images are stored, wait for a person's approval (Airflow 3.1+):
        see :mod:`~airflow_provider_doitong.operators.review`, with ``approval_timeout`` (seconds or a
        timedelta; ``None``: no limit) and ``on_approval_timeout`` (``reject`` or ``approve``).
    :param cache_path: an image cache's folder, local or a URI (templated; default: the connection's
        ``cache_path`` extra): an item whose image was made before (by any run) is copied for 0
        credits, and each image paid for is added; see :mod:`~airflow_provider_doitong.batch.cache`.
    :param cache_max_age: an entry older than this (seconds or a timedelta) is a miss.
    :param cache_refresh: ignore the cache's entries and fill it with new images.
    """

    template_fields: Sequence[str] = (
        "prompts",
        "prompts_file",
        "output_path",
        "provider",
        "width",
        "height",
        "quality",
        "version",
        "max_credits",
        "poll_interval",
        "cache_path",
    )
    template_fields_renderers = {"prompts": "json"}
    operator_extra_links = links.BATCH_LINKS
    ui_color = "#d9c8ff"

    def __init__(
        self,
        *,
        output_path: str,
        prompts: Any = None,
        prompts_file: str | None = None,
        provider: str = "flux-krea",
        width: int | str = contract.DEFAULT_WIDTH,
        height: int | str = contract.DEFAULT_HEIGHT,
        quality: str = contract.DEFAULT_QUALITY,
        version: str | None = None,
        doitong_conn_id: str = DEFAULT_CONN_ID,
        max_credits: int | str | None = None,
        credit_floor: int | None = None,
        concurrency: int | None = None,
        item_retries: int = 2,
        max_failed_items: int = 0,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float | str = 10.0,
        timeout: float | timedelta | None = None,
        on_ambiguous_submission: str = "resubmit",
        on_daily_limit: str = "fail",
        min_defer_seconds: float = 10.0,
        require_approval: bool = False,
        approval_timeout: float | timedelta | None = None,
        on_approval_timeout: str = "reject",
        cache_path: str | None = None,
        cache_max_age: float | timedelta | None = None,
        cache_refresh: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.require_approval, self.on_approval_timeout = require_approval, on_approval_timeout
        self.approval_timeout = review.checked_timeout(
            require_approval, approval_timeout, on_approval_timeout
        )
        _check_arguments(
            one_of=(("prompts", prompts), ("prompts_file", prompts_file)),
            choices=(on_ambiguous_submission, on_daily_limit),
            numbers=(item_retries, max_failed_items, min_defer_seconds, concurrency),
        )
        self.prompts, self.prompts_file, self.output_path = prompts, prompts_file, output_path
        self.provider, self.version, self.quality = provider, version, quality
        self.width, self.height = width, height
        self.doitong_conn_id = doitong_conn_id
        self.max_credits = max_credits
        self.credit_floor = read_credit_floor(credit_floor)
        self.concurrency = concurrency
        self.item_retries, self.max_failed_items = item_retries, max_failed_items
        self.deferrable, self.poll_interval, self.timeout = deferrable, poll_interval, seconds(timeout)
        self.on_ambiguous_submission, self.on_daily_limit = on_ambiguous_submission, on_daily_limit
        self.min_defer_seconds = float(min_defer_seconds)
        self.cache_path, self.cache_max_age, self.cache_refresh = cache_path, cache_max_age, cache_refresh
        #: The connection's secrets, kept out of the summary, the manifest and lineage.
        self._secrets: tuple[str, ...] = ()
        #: What the task wrote and read, for lineage (:meth:`task_io`).
        self._lineage_state = lineage.BatchIO()

    # --- inputs ------------------------------------------------------------------------------
    @cached_property
    def hook(self) -> DoitongHook:
        return DoitongHook(doitong_conn_id=self.doitong_conn_id)

    def _check_numbers(self) -> None:
        """Read the templated numbers into ``poll_seconds`` and ``budget_credits``."""
        self.poll_seconds, self.budget_credits = inputs.batch_numbers(self.poll_interval, self.max_credits)

    def _prompts_location(self) -> str | None:
        """The prompts file read, as a full path or URI (``None`` for a list of prompts)."""
        if self.prompts_file is None:
            return None
        return prompt_file_location(self.prompts_file, self._dag)

    def _items(self) -> batch_items.ItemList:
        self._check_numbers()
        defaults = batch_items.ItemDefaults(
            provider=self.provider,
            width=self.width,
            height=self.height,
            quality=self.quality,
            version=self.version,
        )
        return inputs.batch_item_list(
            prompts=self.prompts, prompts_file=self._prompts_location(), defaults=defaults, log=self.log
        )

    # --- entry points ---------------------------------------------------------------------------
    def execute(self, context: Context) -> dict[str, Any]:
        """Start (or, on a retry, pick up) the batch: check it all, then submit, wait and store."""
        review.check_can_wait(self)
        self._secrets = self.hook.checked_settings().secrets  # read first: masked in the log from here on
        found = self._items()
        problem = batch_items.secret_items_problem(found, self._secrets, conn_id=self.doitong_conn_id)
        if problem:
            del found  # a traceback that shows locals (Airflow 3.0's) must not print the secret
            raise AirflowFailException(problem)
        estimate = batch_items.estimated_credits(found)
        folder, ledger = batch_task.open_ledger(context, Location.of(str(self.output_path)), found)
        links.publish(self, context)
        seeds = batch_prior.seeds(context, ledger, found, self.log)  # none on a retry: it learned its own
        runner = batch_runner.build_runner(self, context, folder, ledger, found, seeds)
        try:
            self._new_try(context, runner)
            runner.resolve_ambiguous()
            batch_balance.check_balance(  # the images the cache holds count at 0
                runner,
                found,
                estimate,
                max_credits=self.budget_credits,
                on_daily_limit=self.on_daily_limit,
                conn_id=self.doitong_conn_id,
            )
            check_output(context, folder, whole_folder=True)  # writable, and this task's alone
            batch_task.save_items(context, folder, ledger, found)  # what a resume reads
            with batch_task.no_collection():  # the first write holds a record of every item
                ledger.flush()  # a batch refused so far has written nothing
            batch_task.save_pointer(context, ledger)
            runner.planner.poll_now = bool(ledger.count(ItemState.RUNNING, ItemState.COMPLETED))
            return self._run(context, runner, found)
        finally:
            runner.client.close()
            ledger.close()

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after :class:`DoitongBatchTrigger` fired: record what ended, fill the slots, go on."""
        try:
            status, ended, fired_at, message, read_at = read_batch_event(event)
        except InvalidBatchEvent as exc:
            raise airflow_error(exc) from None
        self._secrets = self.hook.checked_settings().secrets
        self._check_numbers()
        folder, ledger, found = batch_task.resume(context, Location.of(str(self.output_path)), self._items)
        lead = batch_runner.record_resume(ledger, fired_at)
        self.log.info("Resumed %.1fs after the trigger fired (%s: %s)", lead, status, message)
        runner = batch_runner.build_runner(self, context, folder, ledger, found)
        if read_at is not None:  # the trigger's last read counts as the task's own
            runner.planner.polled(min(read_at, time.time()))
        runner.planner.poll_now = bool(ended) or status == BATCH_ERROR
        try:
            return self._run(context, runner, found)
        finally:
            runner.client.close()
            ledger.close()

    def _new_try(self, context: Context, runner: BatchRunner) -> None:
        try_number = int(getattr(context["ti"], "try_number", 1) or 1)
        deadline = time.time() + self.timeout if self.timeout is not None else None
        again = runner.start_try(try_number=try_number, deadline=deadline)
        if again:
            self.log.warning("This try gives %d items that failed in an earlier try another round", again)
        ledger = runner.ledger
        done = ledger.count(ItemState.STORED)
        if done or ledger.count(ItemState.RUNNING, ItemState.COMPLETED, ItemState.SUBMITTING):
            self.log.info(
                "Picking up the batch from its ledger %s: %d already stored", ledger.store.location, done
            )

    def _run(
        self, context: Context, runner: BatchRunner, found: Sequence[batch_items.BatchItem]
    ) -> dict[str, Any]:
        ledger = runner.ledger
        defer = (
            batch_runner.defer_policy(ledger, min_defer=self.min_defer_seconds) if self.deferrable else None
        )
        outcome = runner.run(defer=defer)
        batch_runner.keep_planner(ledger, runner.planner)
        ledger.flush()
        batch_task.save_pointer(context, ledger)
        if isinstance(outcome, Defer):
            self._defer(runner, outcome)
        return self._finish(context, runner, found, outcome.reason)

    def _defer(self, runner: BatchRunner, outcome: Defer) -> NoReturn:
        """Leave the worker until :class:`DoitongBatchTrigger` fires (it reads when the planner would)."""
        view = runner.view()
        running = view.running
        first_read = runner.planner.trigger_read_at(view, time.time())
        note = batch_runner.deferral_note(outcome.wake_at, first_read, now=time.time())
        self.log.info("Deferring with %d jobs running; %s", len(outcome.job_ids), note)
        trigger = DoitongBatchTrigger(
            job_ids=outcome.job_ids,
            doitong_conn_id=self.doitong_conn_id,
            poll_interval=self.poll_seconds,
            wake_at=outcome.wake_at,
            deadline=runner.planner.deadline,
            read_at=runner.planner.statuses_known_at(running),
            first_read_at=first_read,
            not_before=time.time() + deferral_settle_s(),
        )
        self.defer(trigger=trigger, method_name="execute_complete")

    def _finish(
        self, context: Context, runner: BatchRunner, found: Sequence[batch_items.BatchItem], reason: str
    ) -> dict[str, Any]:
        ledger = runner.ledger
        summary = redact(
            batch_task.write_manifest(context, runner, found, secrets=self._secrets), self._secrets
        )
        self._lineage_state = lineage.BatchIO(
            folder=summary["folder"],
            manifest=summary["manifest"],
            job_ids=tuple(job_id for record in ledger for job_id in record.job_ids),
            credits=summary["credits_spent"],
            images=summary["stored"],
            prompts_file=self._prompts_location(),
        )
        batch_task.raise_for_outcome(
            runner,
            reason,
            summary,
            max_failed_items=self.max_failed_items,
            on_daily_limit=self.on_daily_limit,
            conn_id=self.doitong_conn_id,
        )
        if self.require_approval:
            review.request(self, context, summary, self._lineage_state.to_json())
        return self._announce(context, summary)

    def execute_review(
        self, context: Context, event: dict[str, Any], summary: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, Any]:
        """Resume after the review: record it in the manifest; fail if rejected, else announce the batch."""
        self._lineage_state = lineage.BatchIO.from_json(state)
        return self._announce(context, review.conclude(self, event, summary))

    def _announce(self, context: Context, summary: dict[str, Any]) -> dict[str, Any]:
        announce(context, self.outlets, summary)
        return summary

    # --- OpenLineage (called by its listener only; lineage.py imports OpenLineage) -----------------
    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The output folder and manifest, the prompts file read, the jobs and credits."""
        return lineage.to_operator_lineage(self.task_io(), self._secrets)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """As on completion: a failed batch still wrote its manifest and stored what finished."""
        return lineage.to_operator_lineage(self.task_io(), self._secrets)

    def task_io(self) -> lineage.Lineage:
        """What this task read and wrote, and the jobs behind it, as it kept them."""
        state = self._lineage_state
        return lineage.batch_lineage(
            folder=state.folder,
            manifest=state.manifest,
            prompts_file=state.prompts_file,
            model=self.provider,
            width=self.width,
            height=self.height,
            quality=self.quality,
            job_ids=state.job_ids,
            credits=state.credits,
            images=state.images,
        )
