"""A batch's runner as its task builds it, and the deferral's timing the task learns as it goes.

The planner comes from the connection's plan, the ledger (the durations and the rate-limit window
an earlier try or resume left) and, on a first try, the job durations of the task's last
successful run (:mod:`.batch_prior`); the runner gets the image cache, if the batch has one. The
resume lead (from a trigger firing to the task running again) is measured on each resume and kept
in the ledger, for the next deferral's :class:`~airflow_provider_doitong.batch.runner.DeferPolicy`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_doitong.batch.cache import BatchCache
from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.ledger import Ledger
from airflow_provider_doitong.batch.planner import Limits, Planner
from airflow_provider_doitong.batch.prior import SeededPlanner, planner_from_ledger, seeded_counts
from airflow_provider_doitong.batch.runner import BatchRunner, DeferPolicy
from airflow_provider_doitong.client import contract
from airflow_provider_doitong.operators import image_cache

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_doitong.operators.batch import FluxBatchOperator

#: Seconds from a trigger firing to the task running again, until the batch has measured it.
DEFAULT_RESUME_LEAD = 5.0


def build_runner(
    task: FluxBatchOperator,
    context: Context,
    folder: Any,
    ledger: Ledger,
    found: Sequence[BatchItem],
    seeds: Sequence[float] = (),
) -> BatchRunner:
    """The batch's runner; ``seeds``: an earlier run's job durations (:mod:`.batch_prior`)."""
    hook = task.hook
    plan = contract.PLANS[hook.checked_settings().plan]
    concurrency = task.concurrency or plan.concurrent_jobs
    deadline = ledger.meta.get("deadline")
    settings: dict[str, Any] = {
        "limits": Limits(
            concurrency=concurrency,
            requests_per_window=plan.requests_per_minute,
            window_s=contract.RATE_LIMIT_WINDOW_SECONDS,
            slot_share=concurrency < plan.concurrent_jobs,
        ),
        "poll_interval": task.poll_seconds,
        "deadline": float(deadline) if deadline is not None else None,
        "window": ledger.meta.get("window"),  # as the window was when the task deferred
        "now": time.time(),
    }
    planner = (
        SeededPlanner(seeds=seeds, **settings)
        if seeds
        else planner_from_ledger(
            durations=ledger.meta.get("durations") or (), seeded=ledger.meta.get("seeded"), **settings
        )
    )
    client = hook.get_conn()
    if client.slots is not None:  # a batch told it may run more jobs than the plan's table says
        client.slots.concurrency = max(client.slots.concurrency, concurrency)
    return BatchRunner(
        items=found,
        ledger=ledger,
        client=client,
        planner=planner,
        folder=folder,
        item_retries=task.item_retries,
        max_failed_items=task.max_failed_items,
        on_ambiguous_submission=task.on_ambiguous_submission,
        on_daily_limit=task.on_daily_limit,
        logger=task.log,
        max_credits=task.budget_credits,
        refresh_key=hook.current_api_key,
        credit_floor=hook.credit_floor(task.credit_floor),
        cache=batch_cache(task, context, folder, ledger, found),
    )


def batch_cache(
    task: FluxBatchOperator, context: Context, folder: Any, ledger: Ledger, found: Sequence[BatchItem]
) -> BatchCache | None:
    """The image cache's use by this batch (``None`` without a cache)."""
    cache = image_cache.open_cache(
        task.hook, task.cache_path, max_age=task.cache_max_age, refresh=task.cache_refresh
    )
    if cache is None:
        return None
    owner = image_cache.claimant(context)
    return BatchCache(cache=cache, items=found, ledger=ledger, folder=folder, owner=owner, log=task.log)


def record_resume(ledger: Ledger, fired_at: float) -> float:
    """Note a resume in the ledger's metadata (not flushed): the lead it measured (a worse lead
    counts whole, a better one half) and the resumes so far; returns the lead, in seconds."""
    lead = max(0.0, time.time() - fired_at)
    old = float(ledger.meta.get("resume_lead_s") or DEFAULT_RESUME_LEAD)
    ledger.set_meta(
        resume_lead_s=round(max(lead, (lead + old) / 2), 3),
        resumes=int(ledger.meta.get("resumes", 0)) + 1,
    )
    return lead


def defer_policy(ledger: Ledger, *, min_defer: float) -> DeferPolicy:
    """When deferrable mode leaves the worker: the measured resume lead, with a margin."""
    lead = float(ledger.meta.get("resume_lead_s") or DEFAULT_RESUME_LEAD) * 1.25 + 0.5
    return DeferPolicy(resume_lead=lead, min_defer=min_defer)


def keep_planner(ledger: Ledger, planner: Planner) -> None:
    """Keep in the ledger what the next task picking the batch up plans with (queued for its next
    flush): the last durations learned, the window as it was, and whether seeds still outnumber
    the batch's own durations (:func:`~airflow_provider_doitong.batch.prior.planner_from_ledger`)."""
    ledger.set_meta(
        durations=list(planner.durations)[-20:],
        window=planner.window.snapshot(),
        seeded=seeded_counts(planner),
    )


def deferral_note(wake_at: float | None, first_read_at: float | None, *, now: float) -> str:
    """What the task log says of a deferral: when the trigger wakes the task, and whether a job's
    end can wake it sooner (not when the trigger's first read comes after the wake)."""
    if wake_at is None:
        return "the trigger wakes this task when one ends"
    wake = f"the trigger wakes this task in {max(0.0, wake_at - now):.1f}s"
    if first_read_at is not None and first_read_at >= wake_at:
        return f"{wake}, just before its jobs are due"
    return f"{wake}, or sooner if one ends"
