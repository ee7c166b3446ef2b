"""Submitting a batch's items: one POST per item, its answer recorded before the next request.

The runner marks an item ``submitting`` (flushed) before asking for its POST; this sends it and
records the answer: the item becomes ``running`` with its job id (flushed at once), or the refusal
is judged by :func:`~airflow_provider_doitong.batch.verdicts.judge_submit_error` and recorded on the
item, with the planner told how long to hold the next submission. What a verdict means for the
whole batch (stop submitting, stop everything) is the runner's to apply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.planner import Planner
from airflow_provider_doitong.batch.verdicts import SubmitVerdict, Verdict, judge_submit_error
from airflow_provider_doitong.client import DoitongClient, DoitongError, DoitongRateLimited, Job


class ItemSubmitter:
    """Sends items' submissions and records each answer in the ledger.

    :param jobs: the runner's cache of jobs as last read, shared with the reader and the storer.
    :param setback: called with an item's index and why, when its submission's answer was lost.
    :param charged: called with an item's index and its charge, once the answer says it.
    """

    def __init__(
        self,
        *,
        items: Sequence[BatchItem],
        ledger: Ledger,
        client: DoitongClient,
        planner: Planner,
        jobs: dict[str, Job],
        setback: Callable[..., None],
        charged: Callable[[int, int | None], None],
        on_daily_limit: str,
        clock: Callable[[], float],
        log: Any,
    ) -> None:
        self.items = items
        self.ledger = ledger
        self.client = client
        self.planner = planner
        self._jobs = jobs
        self._setback = setback
        self._charged = charged
        self.on_daily_limit = on_daily_limit
        self.clock = clock
        self.log = log
        self._refusals = 0

    def submit(self, index: int) -> SubmitVerdict | None:
        """Send item ``index``'s POST; ``None`` once it runs, else the verdict on its refusal."""
        request = self.items[index].request
        try:
            # 429s are the planner's to wait for, not the client's to sleep through.
            policy = dataclasses.replace(self.client.retry_policy, max_rate_limit_wait=0)
            job = self.client.submit(request, retry_policy=policy)
        except DoitongError as exc:
            self.planner.saw_rate_limit(self.client.last_rate_limit)
            return self._submit_failed(index, exc)
        now = self.clock()
        self._refusals = 0
        self.planner.saw_rate_limit(self.client.last_rate_limit)
        record = self.ledger.update(
            index,
            state=ItemState.RUNNING,
            job_id=job.id,
            job_ids=[*self.ledger.records[index].job_ids, job.id],
            submitted_at=now,
            error=None,
            credits=job.credit_cost,  # the charge, if said: kept for the budget across resumes
        )
        self.ledger.flush()
        self._jobs[job.id] = job
        self._charged(index, job.credit_cost)
        self.log.info(
            "Submitted item %d/%d as Doitong job %s (attempt %d)",
            index + 1,
            len(self.items),
            job.id,
            record.attempts,
        )
        return None

    def _revert(self, index: int) -> None:
        record = self.ledger.records[index]
        self.ledger.update(index, state=ItemState.PENDING, attempts=max(0, record.attempts - 1))

    def _submit_failed(self, index: int, exc: DoitongError) -> SubmitVerdict:
        """Record a refused or lost submission on its item, and tell the planner when to go on."""
        self._refusals = self._refusals + 1 if isinstance(exc, DoitongRateLimited) else 0
        verdict = judge_submit_error(
            exc,
            now=self.clock(),
            item=index + 1,
            policy=self.client.retry_policy,
            refusals=self._refusals,
            on_daily_limit=self.on_daily_limit,
        )
        if verdict.verdict is Verdict.ITEM_FAILED:
            self.ledger.update(index, state=ItemState.FAILED, error=verdict.message)
            self.log.error("Item %d failed for good: %s", index + 1, verdict.message)
            return verdict
        if verdict.verdict is Verdict.AMBIGUOUS:
            self.log.warning(
                "The submission of item %d may or may not have created a job: %s", index + 1, exc
            )
            self._setback(index, verdict.message, ambiguous=True)
        else:
            self._revert(index)
            self.log.warning("%s", verdict.message)
        if verdict.until is not None:
            self.planner.refused(
                until=verdict.until,
                all_requests=verdict.all_requests,
                running=self.ledger.count(ItemState.RUNNING),
            )
        return verdict
