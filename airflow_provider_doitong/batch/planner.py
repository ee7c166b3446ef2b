"""What a batch does next, decided without I/O: submit, poll, store, sleep, defer or stop.

The runner (:mod:`~airflow_provider_doitong.batch.runner`) tells the :class:`Planner` what the
ledger holds and what the API answered; the planner answers with one :class:`BatchStep` at a time. It
keeps the plan's job slots full (each job's slot is refilled as soon as its end is seen), and spends
the window's requests (:mod:`.window`) on submissions first: a status read never takes a request
that a submission waiting for the window could use, and a read that would free a slot waits until
the window allows the submission that fills it. When to read is
:func:`~airflow_provider_doitong.client.pacing.next_read_at`'s decision (the schedule of the sync
wait and the triggerer's poller too): every running job in one coalesced request just after the
next of them is due once durations are learned (with items left to submit, only the jobs due
together, so that each freed slot is refilled at once; then no read until the next expected end),
before that at intervals growing with the jobs' age, at most ``poll_interval`` apart.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

from airflow_provider_doitong.batch.steps import BatchAction, BatchStep, Limits, View
from airflow_provider_doitong.batch.window import RequestWindow
from airflow_provider_doitong.client.pacing import (
    DUE_GROUP_FRACTION,
    DURATION_SAMPLES,
    POLL_FRACTION,
    RESET_MARGIN,
    due_wave_end,
    next_read_at,
)
from airflow_provider_doitong.client.ratelimit import RateLimitInfo

__all__ = ["JOBS_PER_READ", "BatchAction", "BatchStep", "Limits", "Planner", "View"]

#: Jobs one status request reads (the API's coalesced query limit).
JOBS_PER_READ = 100


class Planner:
    """Decides each step; keeps what it learned (durations, rate-limit refusals, the last read).

    :param limits: the plan's limits.
    :param poll_interval: the longest gap between two status reads while jobs run (see
        :mod:`~airflow_provider_doitong.client.pacing`).
    :param deadline: a Unix time at which the batch stops waiting (``None``: none).
    :param durations: job durations learned earlier (from the ledger), oldest first.
    :param window: the rate-limit window as the batch knew it before a deferral (from the ledger:
        :meth:`RequestWindow.snapshot`), if any.
    :param now: the Unix time, to tell whether that window is over.
    """

    def __init__(
        self,
        *,
        limits: Limits,
        poll_interval: float,
        deadline: float | None = None,
        durations: Iterable[float] = (),
        window: object = None,
        now: float | None = None,
    ) -> None:
        if limits.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        self.limits = limits
        self.poll_interval = poll_interval
        self.deadline = deadline
        self.durations: deque[float] = deque((d for d in durations if d >= 0), maxlen=DURATION_SAMPLES)
        self.last_poll_at = 0.0
        #: Read the running jobs at once (set after a resume: the ledger's running jobs may be done).
        self.poll_now = False
        self.submissions_blocked_until = 0.0
        self.window = RequestWindow(
            requests_per_window=limits.requests_per_window,
            window_s=limits.window_s,
            keep_own_pace=limits.slot_share,
        )
        if window is not None and now is not None:
            self.window.restore(window, now=now)
        #: How many jobs this batch keeps running at once: the plan's concurrent jobs (or the
        #: operator's ``concurrency``) until the account refuses a submission for its job slots,
        #: which other work on the same account holds; then half as many (at least the jobs it
        #: holds, and one), so it leaves the others room without falling to one slot, whose every
        #: refill would cost a status read. Until one of its own jobs ends it submits one item at a
        #: time (a group sent at once into a full account is refused as a whole, each refusal a
        #: request of the window). Each of its jobs that ends then gives one slot more, up to the
        #: plan's: the slots it gave up come back within a round of its jobs once the others' work
        #: is over, and while it is not, trying for more costs one refusal, not a group's.
        self.job_slots = limits.concurrency
        self._shrunk = False  # halved since the last of its jobs ended (refusals of one round count once)
        self._first_wave = True
        self._work_left: int | None = None  # see :meth:`_requests_to_finish`

    # --- what the runner reports ----------------------------------------------------------
    def polled(self, now: float) -> None:
        """A status read was made at ``now``.

        :param now: the Unix time.
        """
        self.last_poll_at = now
        self.poll_now = False

    def learn(self, duration: float | None) -> None:
        """A job of this batch completed after ``duration`` seconds (server time); see :attr:`job_slots`.

        :param duration: the job's processing time, if the API said.
        """
        self._shrunk = False
        self.job_slots = min(self.limits.concurrency, self.job_slots + 1)
        if duration is not None and math.isfinite(duration) and duration >= 0:
            self.durations.append(float(duration))

    def saw_rate_limit(self, rate: RateLimitInfo | None) -> None:
        """The latest ``X-RateLimit-*`` headers.

        :param rate: what the last answer said, if anything.
        """
        self.window.saw(rate)

    @property
    def rate(self) -> RateLimitInfo | None:
        """The latest ``X-RateLimit-*`` headers."""
        return self.window.rate

    @property
    def requests_blocked_until(self) -> float:
        """No request before this Unix time (the window is spent, or the API is unavailable)."""
        return self.window.blocked_until

    def refused(self, *, until: float, all_requests: bool, running: int | None = None) -> None:
        """The API answered 429: wait until ``until`` before the next submission (or any request).

        A refusal for the account's job slots (``all_requests`` false) also halves :attr:`job_slots`
        (never below the ``running`` jobs this batch holds): other work on the account holds the rest.

        :param until: when a request may succeed again.
        :param all_requests: the window is spent (``RATE_LIMITED``), not only the job slots.
        :param running: this batch's running jobs when the job slots were refused.
        """
        if not all_requests and running is not None:
            half = self.job_slots if self._shrunk else self.job_slots // 2
            self.job_slots, self._shrunk = max(1, running, half), True
        self.submissions_blocked_until = max(self.submissions_blocked_until, until)
        if all_requests:
            self.window.blocked_until = max(self.window.blocked_until, until)

    def group_sizes(self) -> Iterator[int]:
        """The most each group of a wave of submissions may hold, group after group (each sent once
        the previous one's answers are in).

        A group sent at once into job slots that others hold is refused as a whole, each refusal a
        request of the window. So a batch's first wave starts with one submission, whose answer
        tells whether anyone else is sending now; while the window is shared, the groups double
        from one; and while other work's requests come in between a group's answers (another batch
        filling the same free slots now), they go one at a time, and double from one again for the
        rest of the wave once the others' requests pause: the first refusal stops the wave.
        Alone, or where no window limits the requests, a group holds what the submission threads
        send at once.
        """
        limited = self.window.limit is not None
        first_wave, self._first_wave = self._first_wave and limited, False
        size, others, raced = 1, self.window.others, False
        while True:
            racing = limited and self.window.others > others
            others, raced = self.window.others, raced or racing
            if racing or first_wave:
                first_wave, size = False, 2
                yield 1
            elif raced or (limited and self.window.shared):  # doubling again once the race pauses
                yield size
                size *= 2
            else:
                yield self.limits.concurrency

    @property
    def typical_duration(self) -> float | None:
        """The median of the recent job durations, once any job has completed."""
        return statistics.median(self.durations) if self.durations else None

    # --- deciding -------------------------------------------------------------------------
    def available_requests(self, now: float) -> float:
        """Requests the window still allows now (``inf`` when the plan does not limit them); see
        :class:`~airflow_provider_doitong.batch.window.RequestWindow`.

        :param now: the Unix time.
        """
        return self.window.available(now, burst=self.job_slots + 1, work_left=self._work_left)

    def statuses_known_at(self, running: Sequence[float]) -> float | None:
        """When every running job's status was last known: the last read, or the earliest
        submission after it (a job is known at its submission). ``None`` with no job running.

        :param running: the ``submitted_at`` of every running job.
        """
        if not running:
            return None
        return max(self.last_poll_at, min(running))

    def trigger_read_at(self, view: View, now: float) -> float | None:
        """When a deferred batch's trigger should first read its running jobs: the read this
        planner would make next, and no sooner than ``poll_interval`` after their statuses were
        known (``None`` with no job running). Jobs whose end is predicted are thus read at it, as
        the sync form reads them, not ``poll_interval`` after the task's last read: the wake that
        brings the task back for them comes first, and the trigger reads nothing; nor sooner
        than the window allows the refills of the slots it frees (:meth:`_read_for_refills_at`).

        :param view: what the ledger holds now.
        :param now: the Unix time.
        """
        running = view.running
        known = self.statuses_known_at(running)
        if known is None:
            return None
        at = max(self.next_poll_at(running), known + self.poll_interval)
        return self._read_for_refills_at(view, now, at)

    def _read_for_refills_at(self, view: View, now: float, poll_at: float) -> float:
        """When a read due at ``poll_at`` goes: one that frees job slots for waiting items (every
        slot is full) waits until the window allows their submissions too (until then more jobs
        end, and one read later sees them all; sooner, it takes a request others could use)."""
        refill = view.pending > 0 and not view.stop_submitting
        if not refill or self.poll_now or len(view.running) < self.job_slots or poll_at == math.inf:
            return poll_at
        reads = math.ceil(len(view.running) / JOBS_PER_READ)
        return max(poll_at, self._requests_ready_at(now, reads + self._refills_per_read(view)))

    def next_poll_at(self, running: Sequence[float], *, refill: bool = False) -> float:
        """When the next status read is worth making, for jobs submitted at ``running``: counted
        from when their statuses were last known (:meth:`statuses_known_at`), so a batch that has
        not read yet does not read at once, as if its last read were long ago.

        :param running: the ``submitted_at`` of every running job.
        :param refill: items wait for the slots these jobs hold: read the jobs due together
            (:data:`~airflow_provider_doitong.client.pacing.DUE_GROUP_FRACTION`), not a whole wave.
        """
        known = self.statuses_known_at(running)
        if known is None:
            return math.inf
        return next_read_at(
            last_read_at=known,
            poll_interval=self.poll_interval,
            started=running,
            typical_duration=self.typical_duration,
            group=self._read_group(refill),
            predicted_cap=False,
        )

    def _read_group(self, refill: bool) -> float:
        """The share of the typical duration within which due jobs are read together: each freed
        slot's own (:data:`DUE_GROUP_FRACTION`) while items wait for slots, but a wave's
        (:data:`POLL_FRACTION`) while the window is shared, where every read is a submission less."""
        return DUE_GROUP_FRACTION if refill and not self.window.shared else POLL_FRACTION

    def decide(self, view: View, now: float) -> BatchStep:
        """The next step.

        :param view: what the ledger holds now.
        :param now: the Unix time.
        """
        if view.fatal:
            return BatchStep(BatchAction.DONE, reason=view.fatal)
        running = len(view.running)
        if self.deadline is not None and now >= self.deadline:
            return BatchStep(BatchAction.DONE, reason="deadline")
        if running == 0 and view.to_store == 0 and (view.pending == 0 or view.stop_submitting):
            return BatchStep(BatchAction.DONE, reason=view.stop_submitting)
        self._work_left = self._requests_to_finish(view)
        available = self.available_requests(now)
        # 1. fill free job slots: an idle slot is what lengthens a batch
        free = self.job_slots - running
        can_submit = view.pending > 0 and free > 0 and not view.stop_submitting
        submit_now = can_submit and now >= self.submissions_blocked_until
        group = self._refill_group(view, free, now) if can_submit else 1
        if submit_now:
            count = int(min(free, view.pending, available))
            if self._shrunk:  # the account's slots were full: one at a time until a job of its own ends
                count = min(count, 1)
            if count >= group:
                return BatchStep(BatchAction.SUBMIT, count=count)
        # 2. read the running jobs when one is due, unless a submission waits for the window: the
        # read would take its request, and only the slots it frees (there are free ones) need it
        refill = view.pending > 0 and not view.stop_submitting
        if self.poll_now and running:
            poll_at = now
        elif submit_now:
            poll_at = math.inf
        else:
            poll_at = self.next_poll_at(view.running, refill=refill)
        reads = math.ceil(running / JOBS_PER_READ)
        poll_at = self._read_for_refills_at(view, now, poll_at)
        if running and now >= poll_at and available >= reads:
            return BatchStep(BatchAction.POLL)
        # 3. store finished images until something else is due
        if running and available < reads and poll_at < math.inf:
            poll_at = max(poll_at, self._requests_ready_at(now, reads))
        candidates = [poll_at]
        if can_submit:
            candidates.append(max(self._requests_ready_at(now, group), self.submissions_blocked_until))
        if self.deadline is not None:
            candidates.append(self.deadline)
        wake = min(candidates)
        if wake == math.inf:
            wake = now + self.poll_interval
        seconds = max(0.0, wake - now)
        if view.to_store:
            return BatchStep(BatchAction.STORE, seconds=seconds)
        return BatchStep(BatchAction.SLEEP, seconds=seconds, reason=self._why(wake, poll_at))

    def _requests_to_finish(self, view: View) -> int | None:
        """The requests the batch's remaining work needs (its submissions, a read per round of its
        job slots and a last one), for :meth:`RequestWindow.available`; ``None`` while other work
        holds some of its job slots: spending the window faster would only take slots from it."""
        if self._shrunk or self.job_slots < self.limits.concurrency:
            return None
        pending = 0 if view.stop_submitting else view.pending
        return pending + math.ceil(pending / self.job_slots) + (1 if view.running else 0)

    def _refills_per_read(self, view: View) -> int:
        """The submissions a read that frees job slots waits for the window to allow besides itself:
        one, or, while the window is shared (and no refusal holds the batch to one at a time), a
        round of its slots, so that the read sees every job that ended meanwhile and one group
        refills them (see :meth:`_refill_group`)."""
        if self._shrunk or not self.window.shared:
            return 1
        return max(1, min(view.pending, self.job_slots))

    def _refill_group(self, view: View, free: int, now: float) -> int:
        """The fewest submissions to send at once into ``free`` job slots.

        While the window is shared and its requests, not the job slots, bind, submissions sent one
        by one as the window lets them through start jobs that end one by one, each end a status
        read of its own (a pool's share of four slots: about one read a job). So the batch waits
        for the window to allow a group for all its free slots, when it will before its reset:
        their jobs are then due together and read by one request. Alone, or where the reset comes
        first, whatever the window allows goes at once (1).
        """
        want = 1 if self._shrunk else min(free, view.pending)
        if want <= 1 or not self.window.shared or self.available_requests(now) >= want:
            return 1
        resets_at = self.window.reset_at(now, fallback=self.poll_interval) - RESET_MARGIN
        return want if self._requests_ready_at(now, want) < resets_at else 1

    def _requests_ready_at(self, now: float, need: float) -> float:
        """When the window allows ``need`` requests (see :meth:`RequestWindow.ready_at`)."""
        return self.window.ready_at(
            now, need, burst=self.job_slots + 1, fallback=self.poll_interval, work_left=self._work_left
        )

    def _why(self, wake: float, poll_at: float) -> str:
        if wake >= poll_at:
            return "waiting for running jobs"
        if wake <= self.submissions_blocked_until:
            return "the API asked to wait before the next submission"
        return "waiting for the rate-limit window"

    # --- deferring ------------------------------------------------------------------------
    def _worker_events(self, view: View, now: float) -> list[float]:
        """When the worker is next needed for something a trigger cannot see coming (a Unix time each)."""
        events = []
        typical = self.typical_duration
        refill = view.pending > 0 and not view.stop_submitting
        if typical is not None:
            due = due_wave_end(
                view.running,
                typical_duration=typical,
                last_read_at=self.last_poll_at,
                group=self._read_group(refill),
            )
            if due is not None:
                events.append(due)
        free = self.job_slots - len(view.running)
        if refill and free > 0:
            group = self._refill_group(view, free, now)
            events.append(max(now, self.submissions_blocked_until, self._requests_ready_at(now, group)))
        if self.deadline is not None:
            events.append(self.deadline)
        return events

    def defer_until(
        self, view: View, step: BatchStep, *, now: float, resume_lead: float, min_defer: float
    ) -> tuple[bool, float | None]:
        """Whether a deferrable batch should leave the worker instead of sleeping through ``step``.

        A resume costs a task process start, ``resume_lead`` seconds (measured). Deferring is worth
        it when the quiet time until the worker is next needed (the next jobs' expected end, or the
        next submission a refusal delays), less the lead, is at least ``min_defer`` (0: always);
        the trigger then wakes the task ``resume_lead`` seconds early, so it is back just as the
        jobs are due. A job that ends sooner wakes it too. Before any job has ended (nothing is
        predicted), the batch defers once its jobs have run ``2 * (resume_lead + min_defer)``:
        they are long, and the first end wakes it.

        :param view: what the ledger holds.
        :param step: the step about to be slept through.
        :param now: the Unix time.
        :param resume_lead: the measured seconds from a trigger firing to the task running again.
        :param min_defer: the shortest quiet time worth a deferral.
        :return: ``(defer, wake_at)``; ``wake_at`` ``None`` means only a job's end wakes the task.
        """
        if step.action is not BatchAction.SLEEP:
            return False, None
        events = self._worker_events(view, now)
        if events:
            quiet = max(0.0, min(events) - now - resume_lead)
            return quiet >= min_defer, now + quiet
        if not view.running:
            return False, None
        waited = now - min(view.running)
        return min_defer == 0 or waited >= 2 * (resume_lead + min_defer), None
