"""Submitting a batch's items: a group of POSTs in flight at once, its records flushed once each way.

The runner hands over a group of pending items (at most
:data:`~airflow_provider_doitong.batch.lanes.SUBMISSIONS_IN_FLIGHT`, all sent at once); this keeps
the ledger's promise with one flush for the whole group each way: every item of the group is
``submitting`` in the ledger, flushed, before any of their POSTs goes out, so after a crash only an
item whose POST may really have been sent is ambiguous; the POSTs then go out together on the
:class:`~airflow_provider_doitong.batch.lanes.Lanes`' submission threads; once every answer is in,
each accepted item becomes ``running`` with its job id, each refusal is judged by
:func:`~airflow_provider_doitong.batch.verdicts.judge_submit_error` and recorded on its item, and
all of it is flushed at once, before the runner makes any other request (so an accepted
submission's record is durable before its item could be submitted again). While some answers
are still awaited, those that came are flushed every :data:`ANSWER_RECORD_SECONDS`: a crash then
costs a second charge only for a POST whose answer was on its way. A thread whose turn comes
after a sibling's submission was refused (anything but a refused request) sends nothing: its item
goes back to ``pending``, as an item the sequential loop had not reached yet did. What a verdict
means for the whole batch (stop submitting, stop everything) is the runner's to apply.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import threading
from collections.abc import Callable, Sequence, Set
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.lanes import Lanes
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.planner import Planner
from airflow_provider_doitong.batch.verdicts import SubmitVerdict, Verdict, judge_submit_error
from airflow_provider_doitong.client import (
    DoitongClient,
    DoitongError,
    DoitongRateLimited,
    ImageRequest,
    Job,
    RetryPolicy,
)
from airflow_provider_doitong.client.errors import was_held
from airflow_provider_doitong.client.ratelimit import RateLimitInfo

#: The longest an accepted submission's job id waits in memory for its group's slowest answer
#: before it is recorded (flushed): a crash loses no more than what was just answered.
ANSWER_RECORD_SECONDS = 0.2


def group_size(estimates: Sequence[int], *, headroom: int | None, worst_ratio: float | None) -> int:
    """How many of the next items (their estimated credits, in order) one group may send at once.

    A group's charges are learnt from its answers, after all of it went out; under ``max_credits``
    a group is only as large as the headroom left covers if each of its items were charged at the
    highest charge-to-estimate ratio seen so far, and one item at a time until a charge has been
    seen (the sequential loop's own guarantee: nothing more goes out once a charge shows the cap
    would be passed). Never fewer than one: the cap itself is checked before each group.

    :param estimates: the next items' estimated credits (as many as may be in flight at once).
    :param headroom: ``max_credits`` less the batch's projection; ``None`` without a cap.
    :param worst_ratio: the highest ``charge / estimate`` seen; ``None`` before any charge.
    """
    if headroom is None:
        return max(1, len(estimates))
    if worst_ratio is None:
        return 1
    count, excess = 0, 0.0
    for estimate in estimates:
        excess += max(0.0, worst_ratio - 1.0) * estimate
        if excess > headroom:
            break
        count += 1
    return max(1, count)


class GroupSizer:
    """:func:`group_size` with the highest charge-to-estimate ratio seen (every charge learnt, the
    ledger's included).

    :param estimates: every item's estimated credits, by index.
    """

    def __init__(self, estimates: Sequence[int]) -> None:
        self.estimates = estimates
        self.worst_ratio: float | None = None

    def charged(self, index: int, credits: int | None) -> None:
        """Item ``index`` was charged ``credits`` (``None``: not said)."""
        if credits is not None:
            ratio = credits / max(1, self.estimates[index])
            self.worst_ratio = max(ratio, self.worst_ratio or 0.0)

    def limit(self, indices: Sequence[int], *, headroom: int | None) -> int:
        """How many of ``indices`` the next group may hold (``headroom``: see :func:`group_size`)."""
        estimates = [self.estimates[i] for i in indices]
        return group_size(estimates, headroom=headroom, worst_ratio=self.worst_ratio)


@dataclass(frozen=True)
class Sent:
    """One submission thread's outcome: its job, or its error, or neither (not sent).

    :param rate: the rate-limit headers of its answer.
    :param at: the Unix time its answer came.
    """

    job: Job | None = None
    error: DoitongError | None = None
    rate: RateLimitInfo | None = None
    at: float = 0.0


def send_one(
    client: DoitongClient,
    *,
    request: ImageRequest,
    policy: RetryPolicy,
    refused: threading.Event,
    clock: Callable[[], float],
    on_daily_limit: str,
) -> Sent:
    """A submission thread's work: send one POST unless a sibling's was refused first.

    :param refused: set by the first thread of the group whose submission failed for more than its
        own request (any verdict but ``item_failed``), so that the threads whose turn had not come
        yet send nothing, as the sequential loop stopped at such a verdict.
    """
    if refused.is_set():
        return Sent()
    try:
        job = client.submit(request, retry_policy=policy)
    except DoitongError as exc:
        now = clock()
        verdict = judge_submit_error(exc, now=now, item=0, policy=policy, on_daily_limit=on_daily_limit)
        if verdict.verdict is not Verdict.ITEM_FAILED:
            refused.set()
        return Sent(error=exc, rate=client.last_rate_limit, at=now)
    return Sent(job=job, rate=client.last_rate_limit, at=clock())


class ItemSubmitter:
    """Sends groups of items' submissions and records each answer in the ledger.

    :param jobs: the runner's cache of jobs as last read, shared with the reader and the storer.
    :param setback: called with an item's index and why, when its submission's answer was lost.
    :param charged: called with an item's index and its charge, once the answer says it.
    :param lanes: the threads the POSTs are sent on.
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
        lanes: Lanes,
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
        self.lanes = lanes
        self._refusals = 0

    def submit_wave(
        self,
        wave: Sequence[int],
        *,
        over_budget: Callable[[], bool],
        group_limit: Callable[[list[int]], int],
    ) -> list[SubmitVerdict]:
        """Submit ``wave`` in groups (:meth:`submit_group`) until one is refused for more than its
        own request, the budget says stop, or ``group_limit`` allows none.

        :param over_budget: whether ``max_credits`` stops the submissions now (asked before each group).
        :param group_limit: how many of the next items (at most the lanes' submission threads, so
            that every item marked ``submitting`` is sent at once) the next group may hold
            (:func:`group_size`).
        :return: the verdicts on the refused submissions.
        """
        verdicts: list[SubmitVerdict] = []
        left = list(wave)
        while left and not over_budget():
            size = group_limit(left[: self.lanes.submissions])
            if size < 1:  # the window allows no more now: the planner says when
                break
            group, left = left[:size], left[size:]
            verdicts += self.submit_group(group)
            if any(v.verdict is not Verdict.ITEM_FAILED for v in verdicts):  # the next may not go out now
                break
        return verdicts

    def submit_group(self, indices: Sequence[int]) -> list[SubmitVerdict]:
        """Submit ``indices`` at once (see the module); flushed when this returns.

        :param indices: pending items, at most as many as the lanes send at once.
        :return: the verdicts on the group's refused submissions, in the items' order.
        """
        for index in indices:
            attempts = self.ledger.records[index].attempts + 1
            self.ledger.update(index, state=ItemState.SUBMITTING, attempts=attempts)
        self.ledger.flush()  # one fsync: the whole group is ``submitting`` before any POST
        # 429s are the planner's to wait for, not the client's to sleep through.
        policy = dataclasses.replace(self.client.retry_policy, max_rate_limit_wait=0)
        refused = threading.Event()
        futures = [
            self.lanes.submit(
                functools.partial(
                    send_one,
                    request=self.items[index].request,
                    policy=policy,
                    refused=refused,
                    clock=self.clock,
                    on_daily_limit=self.on_daily_limit,
                )
            )
            for index in indices
        ]
        early, failed = self._record_waiting(dict(zip(futures, indices, strict=True)))
        # A thread that raised what no verdict knows ends the step, but only once its siblings'
        # jobs are recorded (they are paid for); its own item stays ``submitting``: ambiguous.
        broken = [exc for exc in (future.exception() for future in futures) if exc is not None]
        answers = [(i, f.result()) for i, f in zip(indices, futures, strict=True) if f.exception() is None]
        try:
            verdicts = self.record(answers, recorded=early)
        finally:  # one fsync: every answer of the group recorded, before any other request
            self.ledger.flush()
        if broken or failed:
            raise (broken or failed)[0]
        return verdicts

    def _record_waiting(self, futures: dict[Future[Sent], int]) -> tuple[set[int], list[Exception]]:
        """Wait for a group's answers; while some are still awaited, record (flushed) the jobs of
        those that came, every :data:`ANSWER_RECORD_SECONDS`.

        A job id held only in memory is lost with the process, and its item, still ``submitting``,
        would be paid again by the next try: a slow sibling must not keep the others' answers off
        the disk. A group whose answers all come within that time is recorded by one flush.

        :return: the items recorded, and what recording them raised (once the group is recorded).
        """
        recorded: set[int] = set()
        failed: list[Exception] = []
        pending = set(futures)
        while pending:
            _, pending = concurrent.futures.wait(pending, timeout=ANSWER_RECORD_SECONDS)
            if not pending:
                break  # every answer is in: recorded with the refusals, by the group's one flush
            answered = [
                (index, future.result())
                for future, index in futures.items()
                if future.done() and index not in recorded and future.exception() is None
            ]
            accepted = [(index, sent.job, sent.at) for index, sent in answered if sent.job is not None]
            for index, job, at in accepted:
                recorded.add(index)
                try:
                    self._accepted(index, job, at)
                except Exception as exc:  # the others' job ids are still recorded (and flushed)
                    failed.append(exc)
            if accepted:
                self.ledger.flush()
        return recorded, failed

    def record(
        self, group: list[tuple[int, Sent]], *, recorded: Set[int] = frozenset()
    ) -> list[SubmitVerdict]:
        """Record a group's answers (not flushed): accepted items first, so that a refusal of the
        job slots counts them among this batch's running jobs; then refusals, in the items' order.

        :param recorded: the accepted items already recorded while the group was in flight.
        :return: the verdicts on the refused submissions.
        """
        for _, sent in sorted(group, key=lambda pair: pair[1].at):
            if sent.job is not None or sent.error is not None:
                self.planner.saw_rate_limit(sent.rate)
        if any(isinstance(e := sent.error, DoitongRateLimited) and not was_held(e) for _, sent in group):
            self._refusals += 1  # one round of refusals, however many of the group were refused
        elif any(
            sent.job is not None or (sent.error is not None and not was_held(sent.error)) for _, sent in group
        ):
            self._refusals = 0  # answered; a group held unsent leaves the count of refusals as it was
        failed: list[Exception] = []
        for index, sent in group:
            if sent.job is not None and index not in recorded:
                try:
                    self._accepted(index, sent.job, sent.at)
                except Exception as exc:  # the others' job ids are still recorded (and flushed)
                    failed.append(exc)
        if failed:
            raise failed[0]
        verdicts = []
        for index, sent in group:
            if sent.error is not None:
                verdicts.append(self._submit_failed(index, sent.error))
            elif sent.job is None:
                self._revert(index)  # not sent: a sibling's refusal came first
        return verdicts

    def _accepted(self, index: int, job: Job, at: float) -> None:
        record = self.ledger.update(
            index,
            state=ItemState.RUNNING,
            job_id=job.id,
            job_ids=[*self.ledger.records[index].job_ids, job.id],
            submitted_at=at,
            error=None,
            credits=job.credit_cost,  # the charge, if said: kept for the budget across resumes
        )
        self._jobs[job.id] = job
        self._charged(index, job.credit_cost)
        self.log.info(
            "Submitted item %d/%d as Doitong job %s (attempt %d)",
            index + 1,
            len(self.items),
            job.id,
            record.attempts,
        )

    def _revert(self, index: int) -> None:
        record = self.ledger.records[index]
        self.ledger.update(index, state=ItemState.PENDING, attempts=max(0, record.attempts - 1))

    def _submit_failed(self, index: int, exc: DoitongError) -> SubmitVerdict:
        """Record a refused or lost submission on its item, and tell the planner when to go on."""
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
            (self.log.info if was_held(exc) else self.log.warning)("%s", verdict.message)
        if verdict.until is not None:
            self.planner.refused(
                until=verdict.until,
                all_requests=verdict.all_requests,
                running=self.ledger.count(ItemState.RUNNING),
            )
        return verdict
