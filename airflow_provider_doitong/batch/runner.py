"""The batch's shell: carries out the planner's steps with a client, the ledger and the output folder.

Every decision is the :class:`~airflow_provider_doitong.batch.planner.Planner`'s; this module (with
:mod:`.submitter`, :mod:`.reader` and :mod:`.storer`) only moves bytes and records what happened,
in the order that keeps the batch durable: an item is ``submitting`` in the ledger before its POST,
``running`` with its job id right after the answer (flushed before the next request), and
``stored`` with the file's SHA-256 once the image is written. Submissions go out in groups sent at
once, and images are downloaded and written while the loop goes on (:mod:`.lanes`); only the loop's
thread touches the ledger and the planner.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_doitong.batch import retries
from airflow_provider_doitong.batch.budget import (
    CreditBudget,
    below_floor,
    item_estimates,
    over_estimate,
    within_floor,
)
from airflow_provider_doitong.batch.cache import BatchCache
from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.lanes import Lanes
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.planner import BatchAction, Planner, View
from airflow_provider_doitong.batch.progress import progress_line_of, write_snapshot
from airflow_provider_doitong.batch.reader import JobReader
from airflow_provider_doitong.batch.results import Defer, DeferPolicy, Finished
from airflow_provider_doitong.batch.storer import ImageStorer
from airflow_provider_doitong.batch.submitter import GroupSizer, ItemSubmitter
from airflow_provider_doitong.batch.verdicts import Verdict
from airflow_provider_doitong.client import DoitongClient, DoitongError, Job, observability
from airflow_provider_doitong.client.retry import backoff, is_transient

__all__ = ["PROGRESS_SECONDS", "BatchRunner", "Defer", "DeferPolicy", "Finished"]

log = logging.getLogger(__name__)

#: Seconds between two progress lines.
PROGRESS_SECONDS = 30.0


class BatchRunner:
    """Runs a batch's items through the planner's steps.

    :param folder: the output folder (an ``ObjectStoragePath``).
    :param item_retries: failed jobs an item may replace in one task try.
    :param max_failed_items: failed items past which the batch stops submitting.
    :param on_ambiguous_submission: ``resubmit`` or ``fail`` an item whose submission's answer was lost.
    :param on_daily_limit: ``fail``, ``skip`` or ``wait`` on a 429 ``DAILY_LIMIT``.
    :param logger: where progress goes (the task's logger, so that it reaches the task log).
    :param max_credits: the most the batch may cost by Doitong's real charges (see :mod:`.budget`).
    :param refresh_key: called once when the API refuses the key on a status read, for the
        connection's current one (a rotated key), as the single-image wait does.
    :param credit_floor: the balance no submission may take the account below: the balance is read
        before each submission wave, and what would pass the floor is left unsubmitted.
    :param cache: the image cache's use by this batch, if it has one (see :mod:`.cache`).
    """

    def __init__(
        self,
        *,
        items: Sequence[BatchItem],
        ledger: Ledger,
        client: DoitongClient,
        planner: Planner,
        folder: Any,
        item_retries: int,
        max_failed_items: int,
        on_ambiguous_submission: str = "resubmit",
        on_daily_limit: str = "fail",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        logger: Any = None,
        max_credits: int | None = None,
        refresh_key: Callable[[], str] | None = None,
        credit_floor: int | None = None,
        cache: BatchCache | None = None,
    ) -> None:
        self.items = items
        self.ledger = ledger
        self.client = client
        self.planner = planner
        self.folder = folder
        self.item_retries = item_retries
        self.max_failed_items = max_failed_items
        self.on_ambiguous_submission = on_ambiguous_submission
        self.on_daily_limit = on_daily_limit
        self.credit_floor = credit_floor
        self.cache = cache
        self.clock = clock
        self.sleep = sleep
        self.log = logger or log
        self.stop_submitting = self.fatal = ""
        #: The error that stopped the submissions (or everything), for the task's final answer.
        self.stop_error: DoitongError | None = None
        self._jobs: dict[str, Job] = {}
        #: The threads submissions and downloads run on (closed when :meth:`run` returns).
        self.lanes = Lanes(client)
        self.images, self.submitter, self.reader = self._parts(refresh_key)
        self._last_progress = clock()
        self.budget, self.sizer = self._budget(max_credits)
        #: Set when ``max_credits`` or the credit floor stopped the submissions: items may be left
        #: unsubmitted.
        self.budget_stopped = False

    def _parts(self, refresh_key: Callable[[], str] | None) -> tuple[ImageStorer, ItemSubmitter, JobReader]:
        """The storer, the submitter and the reader the loop's steps go through."""
        images = ImageStorer(
            items=self.items,
            ledger=self.ledger,
            client=self.client,
            planner=self.planner,
            folder=self.folder,
            jobs=self._jobs,
            log=self.log,
            lanes=self.lanes,
        )
        submitter = ItemSubmitter(
            items=self.items,
            ledger=self.ledger,
            client=self.client,
            planner=self.planner,
            jobs=self._jobs,
            setback=self._setback,
            charged=self._charged,
            on_daily_limit=self.on_daily_limit,
            clock=self.clock,
            log=self.log,
            lanes=self.lanes,
        )
        reader = JobReader(
            ledger=self.ledger,
            client=self.client,
            planner=self.planner,
            jobs=self._jobs,
            job_failed=self._setback,
            log=self.log,
            clock=self.clock,
            refresh_key=refresh_key,
        )
        return images, submitter, reader

    def _budget(self, max_credits: int | None) -> tuple[CreditBudget, GroupSizer]:
        """The running budget and the group sizer, each told what the items started so far charged."""
        budget = CreditBudget(item_estimates(self.items), max_credits)
        started = self.ledger.in_state(*(state for state in ItemState if state is not ItemState.PENDING))
        known = [(index, self.ledger.records[index].credits) for index in started]
        budget.learn(known)
        sizer = GroupSizer(budget.estimates)
        for index, credits in known:
            sizer.charged(index, credits)
        return budget, sizer

    # --- starting ---------------------------------------------------------------------------
    def start_try(self, *, try_number: int, deadline: float | None) -> int:
        """Begin a task try (not flushed): see :func:`.retries.start_try`."""
        return retries.start_try(self, try_number=try_number, deadline=deadline)

    def resolve_ambiguous(self) -> int:
        """Settle items left ``submitting`` by a crash (not flushed): see :func:`.retries.resolve_ambiguous`."""
        return retries.resolve_ambiguous(self)

    def _setback(self, index: int, message: str, *, ambiguous: bool = False) -> None:
        """An item's job failed (or its submission is ambiguous): see :func:`.retries.setback`."""
        retries.setback(self, index, message, ambiguous=ambiguous)

    def view(self) -> View:
        """What the ledger holds, for the planner."""
        ledger = self.ledger
        failed = ledger.count(ItemState.FAILED)
        stop = self.stop_submitting
        if not stop and failed > self.max_failed_items:
            stop = f"{failed} items failed, more than max_failed_items={self.max_failed_items}"
        running = [ledger.records[i].submitted_at or 0.0 for i in ledger.in_state(ItemState.RUNNING)]
        return View(
            pending=ledger.count(ItemState.PENDING) - (len(self.cache.held) if self.cache else 0),
            running=running,
            to_store=ledger.count(ItemState.COMPLETED),
            stop_submitting=stop,
            fatal=self.fatal,
        )

    # --- the loop ---------------------------------------------------------------------------
    def run(self, *, defer: DeferPolicy | None = None) -> Finished | Defer:
        """Carry out steps until the batch is done or, with a ``defer`` policy, should defer.

        Downloads still in flight when it returns (a fatal error, the deadline) are waited for and
        recorded first.

        :param defer: deferrable mode's policy; ``None`` sleeps in the worker.
        """
        outcome: Finished | Defer | None = None
        self.planner.saw_rate_limit(self.client.last_rate_limit)  # the balance read's, if any
        try:
            if self.cache is not None:  # hits cost nothing: the budget counts them at 0
                self.budget.learn((index, 0) for index in self.cache.resolve())
            outcome = self._steps(defer)
            candidates = self._to_fill()
            self.images.drain()
            self._fill(candidates)
            return outcome
        finally:
            self.lanes.close()
            if self.cache is not None:  # on every way out, even the final drain's failures
                self.cache.release_unmade(pending=not isinstance(outcome, Defer))

    def _steps(self, defer: DeferPolicy | None) -> Finished | Defer:
        while True:
            candidates = self._to_fill()
            if self.images.collect():
                self.ledger.flush()
                self._fill(candidates)
            view = self.view()
            step = self.planner.decide(view, self.clock())
            if step.action is BatchAction.SUBMIT:
                self.submit(step.count)
            elif step.action is BatchAction.POLL:
                self.poll()
            elif step.action is BatchAction.STORE:
                self.store(step.seconds)
            elif step.action is BatchAction.DONE:
                if self.cache is not None and self.cache.settle(
                    reason=step.reason, deadline=self.planner.deadline
                ):
                    continue
                self.ledger.flush()
                self.progress(force=True)
                return Finished(step.reason)
            else:
                leave, wake_at = (
                    self.planner.defer_until(
                        view, step, now=self.clock(), resume_lead=defer.resume_lead, min_defer=defer.min_defer
                    )
                    if defer is not None
                    else (False, None)
                )
                if leave:
                    self.ledger.flush()
                    self.progress(force=True)
                    return Defer(wake_at=wake_at, job_ids=self.running_job_ids())
                self.sleep(step.seconds)
            self.progress()

    def running_job_ids(self) -> list[str]:
        """The job ids of every running item."""
        return [str(self.ledger.records[i].job_id) for i in self.ledger.in_state(ItemState.RUNNING)]

    # --- submitting -------------------------------------------------------------------------
    def submit(self, count: int) -> None:
        """Submit up to ``count`` pending items, in groups sent at once (see :mod:`.submitter`).

        The credit floor is checked for all of them (one account read, as for a wave before),
        ``max_credits`` before each group, whose size it bounds (:func:`.submitter.group_size`), as
        the planner does where others may hold the account's job slots (:meth:`.Planner.group_sizes`).

        :param count: how many.
        """
        pending = self.ledger.in_state(ItemState.PENDING)
        wave = self._within_floor((self.cache.ready(pending) if self.cache else pending)[:count])
        sizes = self.planner.group_sizes()
        groups: list[int] = []  # the sizes of the wave's groups so far

        def group_limit(indices: list[int]) -> int:
            size = min(self._group_limit(indices), next(sizes))
            if groups:  # the first group is the planner's decision; the next ones, its answers'
                size = min(size, self.planner.window.room(self.clock(), len(indices)))
            groups.append(size)
            return size

        verdicts = self.submitter.submit_wave(wave, over_budget=self._over_budget, group_limit=group_limit)
        for verdict in sorted(verdicts, key=lambda v: v.verdict is Verdict.FATAL):  # fatal last: it wins
            if verdict.verdict is Verdict.STOP:
                self.stop_submitting, self.stop_error = verdict.message, verdict.error
            elif verdict.verdict is Verdict.FATAL:
                self.fatal, self.stop_error = verdict.message, verdict.error
        self.ledger.flush()

    def _group_limit(self, indices: list[int]) -> int:
        """How many of ``indices`` the next group may hold, by ``max_credits`` (see :class:`GroupSizer`)."""
        cap = self.budget.max_credits
        headroom = None if cap is None else cap - self.budget.projected(dropped=self._dropped())
        return self.sizer.limit(indices, headroom=headroom)

    def _charged(self, index: int, credits: int | None) -> None:
        self.sizer.charged(index, credits)
        if self.budget.charged(index, credits):  # over its estimate, and not reported before
            note = over_estimate(charged=credits, estimate=self.items[index].request.estimated_credits)
            self.log.warning("Item %d/%d: Doitong %s", index + 1, len(self.items), note)

    def _within_floor(self, wave: list[int]) -> list[int]:
        """The items of ``wave`` that keep the account at or above the credit floor (one account read).

        The balance is the account's, which other tasks spend too, so it is read before each wave;
        an item that would pass the floor stops the submissions, as ``max_credits`` does. A read that
        failed for now sends nothing now (the planner asks again after the client's backoff); one
        that cannot succeed (a refused key) stops the submissions with its error.
        """
        if self.credit_floor is None or not wave or self.stop_submitting:
            return wave
        try:
            balance = self.client.get_account().credits
        except DoitongError as exc:
            self.planner.saw_rate_limit(self.client.last_rate_limit)
            if not is_transient(exc):  # a refused key, say: no later read does better
                self.stop_submitting = f"Reading the Doitong account's balance failed: {exc}"
                self.stop_error = exc
                return []
            self.log.warning("Reading the Doitong account's balance failed (%s); submitting later", exc)
            until = self.clock() + backoff(self.client.retry_policy, 2)
            self.planner.refused(until=until, all_requests=True)
            return []
        self.planner.saw_rate_limit(self.client.last_rate_limit)
        estimates = [self.items[i].request.estimated_credits for i in wave]
        allowed = within_floor(balance=balance, floor=self.credit_floor, estimates=estimates)
        if allowed < len(wave):
            reason = below_floor(balance=balance, floor=self.credit_floor, estimate=estimates[allowed])
            self.budget_stopped = True
            self.stop_submitting = reason
            self.log.warning(
                "Not submitting any more: %s; %d items are left unsubmitted, running jobs are still "
                "waited for and stored",
                reason,
                self.ledger.count(ItemState.PENDING) - allowed,
            )
        return wave[:allowed]

    def _dropped(self) -> list[int]:
        """Items that failed for good without a charge (they cost nothing)."""
        return [i for i in self.ledger.in_state(ItemState.FAILED) if self.ledger.records[i].credits is None]

    def _over_budget(self) -> bool:
        """Whether ``max_credits`` stops the submissions now (decided by :class:`CreditBudget`)."""
        if self.budget.max_credits is None:
            return False
        reason = self.budget.stop_reason(dropped=self._dropped())
        if not reason:
            return False
        if not self.budget_stopped:
            self.budget_stopped = True
            self.stop_submitting = self.stop_submitting or reason
            self.log.warning(
                "Not submitting any more: %s; %d items are left unsubmitted, running jobs are still "
                "waited for and stored",
                reason,
                self.ledger.count(ItemState.PENDING),
            )
        return True

    # --- reading jobs -----------------------------------------------------------------------
    def poll(self) -> None:
        """Read every running job in coalesced requests and record what ended (see :mod:`.reader`)."""
        before = set(self.ledger.in_state(ItemState.COMPLETED))
        fatal = self.reader.poll()
        self.images.start()  # the images of the jobs just seen complete, while the loop goes on
        for index in self.ledger.in_state(ItemState.COMPLETED):
            if index not in before:
                record = self.ledger.records[index]
                self._charged(index, record.credits)
                observability.completed(
                    self.client.observer,
                    model=self.items[index].request.provider,
                    credits=record.credits,
                    turnaround=record.duration,
                )
        if fatal is not None:
            self.fatal, self.stop_error = str(fatal), fatal

    # --- storing and progress ---------------------------------------------------------------
    def store(self, seconds: float) -> None:
        """Download and write completed images for up to ``seconds`` (at least one).

        :param seconds: how long before the planner must be asked again.
        """
        candidates = self._to_fill()
        self.images.store(until=self.clock() + seconds)
        self._fill(candidates)

    def _to_fill(self) -> list[int]:
        """The items whose images may be stored next, to fill the image cache with (none without one);
        noted in the ledger with the next flush, which records them stored (see :meth:`.BatchCache.to_fill`)."""
        return self.cache.to_fill() if self.cache is not None else []

    def _fill(self, candidates: list[int]) -> None:
        """Fill the image cache with those of ``candidates`` stored since :meth:`_to_fill`."""
        if self.cache is not None and candidates:
            self.cache.stored(candidates)

    def progress(self, *, force: bool = False) -> None:
        """Log ``n/N done, k failed, credits spent, ETA`` every :data:`PROGRESS_SECONDS` (or now).

        :param force: log now.
        """
        now = self.clock()
        if force or now - self._last_progress >= PROGRESS_SECONDS:
            self._last_progress = now
            self.log.info("%s", progress_line_of(self.ledger, self.planner))
            write_snapshot(self.folder, self.items, self.ledger)
