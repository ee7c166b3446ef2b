"""The sans-IO planner, driven by a fake clock and a fake API that keeps the plan's limits."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from airflow_provider_doitong.batch.planner import BatchAction, BatchStep, Limits, Planner, View
from airflow_provider_doitong.batch.window import RECENT_S, RequestWindow
from airflow_provider_doitong.client.pacing import RESET_MARGIN, YOUNG_JOB_GAP
from airflow_provider_doitong.client.ratelimit import RateLimitInfo


@dataclass
class FakeApi:
    """Jobs of a fixed duration; a fixed request window; a concurrency limit, refused with a 429."""

    duration: float
    concurrency: int
    per_window: int
    window: float
    durations: list[float] | None = None
    window_end: float = 0.0
    used: int = 0
    requests: list[tuple[float, str]] = field(default_factory=list)
    refusals: int = 0
    #: Answers 429 for a spent window (only when ``Sim.strict`` is off: several batches share it).
    window_refusals: int = 0

    def hit(self, now: float, kind: str) -> RateLimitInfo:
        if now >= self.window_end:
            self.window_end, self.used = now + self.window, 0
        self.used += 1
        self.requests.append((now, kind))
        return RateLimitInfo(
            limit=self.per_window,
            remaining=max(0, self.per_window - self.used),
            reset_at=self.window_end,
            retry_at=None,
        )

    def allowed(self) -> bool:
        return self.used <= self.per_window


@dataclass
class Sim:
    """A batch of ``n`` items run by the planner against :class:`FakeApi`; time only moves when it sleeps."""

    n: int
    api: FakeApi
    planner: Planner
    now: float = 1_000.0
    pending: list[int] = field(default_factory=list)
    running: dict[int, tuple[float, float]] = field(default_factory=dict)
    completed: list[int] = field(default_factory=list)
    stored: list[int] = field(default_factory=list)
    max_running: int = 0
    first_submit: float | None = None
    steps: int = 0
    #: Other batches on the same account (their running jobs take its job slots too).
    sharing: list[Sim] = field(default_factory=list)
    #: Seconds one submission takes (its round trip and the ledger's write).
    submit_seconds: float = 0.01
    #: A request past the window fails the test (off: the API answers 429, as for batches sharing it).
    strict: bool = True
    finished_at: float | None = None
    _durations: Iterator[float] | None = None

    def __post_init__(self) -> None:
        self.pending = list(range(self.n))

    def view(self) -> View:
        return View(
            pending=len(self.pending),
            running=[s for s, _ in self.running.values()],
            to_store=len(self.completed),
        )

    def run(self, limit: int = 200_000) -> BatchStep:
        while self.steps < limit:
            step = self.step()
            if step.action is BatchAction.DONE:
                return step
        raise AssertionError("the planner did not finish")

    def account_running(self) -> int:
        """Jobs running on the account: this batch's and those of the batches sharing it."""
        return len(self.running) + sum(len(other.running) for other in self.sharing)

    def step(self) -> BatchStep:
        """Ask the planner once and do what it says."""
        if self._durations is None:
            self._durations = iter(self.api.durations or [])
        self.steps += 1
        step = self.planner.decide(self.view(), self.now)
        if step.action is BatchAction.SUBMIT:
            assert 0 < step.count <= len(self.pending)
            for _ in range(step.count):
                rate = self.api.hit(self.now, "submit")
                self.planner.saw_rate_limit(rate)
                if self._window_refused():
                    break
                if self.account_running() >= self.api.concurrency:
                    self.api.refusals += 1
                    self.planner.refused(until=self.now + 1, all_requests=False, running=len(self.running))
                    break
                item = self.pending.pop(0)
                self.first_submit = self.first_submit or self.now
                d = next(self._durations, self.api.duration)
                self.running[item] = (self.now, self.now + d)
                self.max_running = max(self.max_running, len(self.running))
                self.now += self.submit_seconds
        elif step.action is BatchAction.POLL:
            rate = self.api.hit(self.now, "status")
            self.planner.saw_rate_limit(rate)
            if self._window_refused():
                return step
            self.planner.polled(self.now)
            for item, (started, end) in list(self.running.items()):
                if end <= self.now:
                    del self.running[item]
                    self.completed.append(item)
                    self.planner.learn(end - started)
            self.now += 0.02
        elif step.action is BatchAction.STORE:
            self.stored.append(self.completed.pop(0))
            self.now += 0.01
        elif step.action is not BatchAction.DONE:
            assert step.seconds >= 0
            self.now += max(step.seconds, 1e-3)
        else:
            self.finished_at = self.finished_at or self.now
        return step

    def _window_refused(self) -> bool:
        """Whether the last request was past the window (a 429 ``RATE_LIMITED``)."""
        if self.api.allowed():
            return False
        assert not self.strict, "the planner spent more requests than the window allows"
        self.api.window_refusals += 1
        self.planner.refused(until=self.api.window_end, all_requests=True)
        self.now += 0.01
        return True

    def status_requests(self) -> int:
        return sum(1 for _, kind in self.api.requests if kind == "status")


def run_together(sims: list[Sim]) -> None:
    """Run batches sharing one account on one clock, the one furthest behind first."""
    for sim in sims:
        sim.sharing = [other for other in sims if other is not sim]
    done: set[int] = set()
    while len(done) < len(sims):
        i, sim = min(((i, s) for i, s in enumerate(sims) if i not in done), key=lambda pair: pair[1].now)
        for other in sims:  # one clock: the account's jobs end at the same times for everyone
            other.now = max(other.now, sim.now)
        if sim.step().action is BatchAction.DONE:
            done.add(i)
        assert sim.steps < 100_000


def lower_bound(n: int, c: int, d: float, r: int, w: float) -> float:
    return max(math.ceil(n / c) * d, math.floor((n - 1) / r) * w + d)


def make(n: int, *, duration: float, c: int = 10, r: int = 60, w: float = 15.0, poll: float = 10.0) -> Sim:
    api = FakeApi(duration=duration, concurrency=c, per_window=r, window=w)
    planner = Planner(limits=Limits(concurrency=c, requests_per_window=r, window_s=w), poll_interval=poll)
    return Sim(n=n, api=api, planner=planner)


@pytest.mark.parametrize(("n", "duration"), [(30, 16.0), (200, 70.0), (95, 5.0)])
def test_slots_stay_full_and_the_makespan_nears_the_plans_bound(n: int, duration: float) -> None:
    sim = make(n, duration=duration)
    step = sim.run()
    assert step.reason == ""
    assert sorted(sim.stored) == list(range(n))
    assert sim.max_running == 10 and sim.api.refusals == 0
    bound = lower_bound(n, 10, duration, 60, 15.0)
    makespan = sim.now - (sim.first_submit or 0)
    # the first wave's end is found by reads spaced a tenth of the jobs' age; later waves at once
    assert makespan <= bound + 0.1 * duration + 0.5 * math.ceil(n / 10), (makespan, bound)


def test_status_reads_stay_below_half_a_read_per_image_on_long_batches() -> None:
    sim = make(200, duration=70.0, poll=30.0)
    sim.run()
    assert sim.status_requests() / 200 < 0.5, sim.status_requests()


def test_the_rate_limit_binds_and_is_never_exceeded() -> None:
    # short jobs, few requests: the window, not the job slots, sets the pace
    sim = make(300, duration=1.0, r=20, w=5.0)
    sim.run()
    assert sorted(sim.stored) == list(range(300))
    assert sim.api.refusals == 0
    bound = lower_bound(300, 10, 1.0, 20, 5.0)
    assert sim.now - (sim.first_submit or 0) <= bound * 1.6, (sim.now - (sim.first_submit or 0), bound)


def test_varying_durations_are_found_soon_after_they_end() -> None:
    sim = make(40, duration=20.0)
    sim.api.durations = [20.0 + (i % 7) for i in range(40)]
    sim.run()
    assert sorted(sim.stored) == list(range(40))


def test_a_concurrency_refusal_waits_before_the_next_submission() -> None:
    planner = Planner(limits=Limits(concurrency=3, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    planner.refused(until=1_010.0, all_requests=False)
    step = planner.decide(View(pending=5, running=[], to_store=0), 1_000.0)
    assert step.action is BatchAction.SLEEP and step.seconds == pytest.approx(10.0)
    assert planner.decide(View(pending=5, running=[], to_store=0), 1_010.0) == BatchStep(
        BatchAction.SUBMIT, count=3
    )


def test_submissions_take_the_windows_requests_before_reads() -> None:
    planner = Planner(limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    planner.learn(4.0)
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=3, reset_at=1_005.0, retry_at=None))
    # the last three requests go to submissions, none is kept for a read
    assert planner.decide(View(pending=9, running=[990.0], to_store=0), 1_000.0) == BatchStep(
        BatchAction.SUBMIT, count=3
    )
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=0, reset_at=1_005.0, retry_at=None))
    # a read is due (the first job ended at 994), but free slots wait for the window: no read takes
    # a submission's request, the batch waits for the reset
    step = planner.decide(View(pending=6, running=[990.0, 1_000.0, 1_000.0, 1_000.0], to_store=0), 1_000.0)
    assert step.action is BatchAction.SLEEP and step.seconds == pytest.approx(5.0 + RESET_MARGIN)
    # every slot is full: reading is what frees one, and it is due
    full = View(pending=6, running=[990.0] + [1_000.0] * 9, to_store=0)
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=59, reset_at=1_065.0, retry_at=None))
    assert planner.decide(full, 1_005.0) == BatchStep(BatchAction.POLL)


def test_a_read_that_frees_a_slot_waits_until_the_window_allows_its_submission_too() -> None:
    planner = Planner(limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    planner.learn(4.0)
    full = View(pending=6, running=[990.0] + [1_000.0] * 9, to_store=0)
    # the others spent the window down to one request for the batch: a read now would free a slot
    # that no submission could fill before the reset; at the reset one read sees every end since
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=1, reset_at=1_010.0, retry_at=None))
    step = planner.decide(full, 1_005.0)
    assert step.action is BatchAction.SLEEP
    assert step.seconds == pytest.approx(5.0 + RESET_MARGIN)
    # with nothing left to submit the read is for the results: it goes now
    assert planner.decide(View(pending=0, running=full.running, to_store=0), 1_005.0) == BatchStep(
        BatchAction.POLL
    )


def test_reads_come_just_after_the_expected_end_once_durations_are_known() -> None:
    planner = Planner(
        limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0), poll_interval=30.0
    )
    for _ in range(3):
        planner.learn(16.0)
    planner.polled(1_000.0)
    running = [1_000.0 + 0.05 * i for i in range(10)]
    when = planner.next_poll_at(running)
    assert when == pytest.approx(1_016.5)  # one read after the last of the wave, not ten
    # without durations, reads come at a tenth of the jobs' age, at least every min(1.5 s, interval)
    fresh = Planner(limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0), poll_interval=30.0)
    fresh.polled(1_000.0)
    assert fresh.next_poll_at([1_000.0]) == pytest.approx(1_000.0 + YOUNG_JOB_GAP)
    fresh.polled(1_050.0)
    assert fresh.next_poll_at([1_000.0]) == pytest.approx(1_055.0)


def test_a_batch_that_has_not_read_yet_reads_its_first_wave_a_young_jobs_gap_after_submitting_it() -> None:
    planner = Planner(
        limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0), poll_interval=10.0
    )
    wave = [1_000.0 + 0.01 * i for i in range(10)]
    # statuses are known at submission: not "a poll interval after a read at time 0", i.e. at once
    assert planner.next_poll_at(wave) == pytest.approx(wave[-1] + YOUNG_JOB_GAP)
    sim = make(30, duration=16.0, w=60.0, poll=10.0)
    sim.run()
    first_wave = [t for t, kind in sim.api.requests if kind == "status" and t < sim.first_submit + 16.0]
    assert min(first_wave) >= sim.first_submit + YOUNG_JOB_GAP
    # 11 for the first wave (1.5 s apart, then a tenth of its age), 2 for the two after it
    assert sim.status_requests() <= 13


def test_stop_and_fatal_and_deadline_end_the_batch() -> None:
    planner = Planner(
        limits=Limits(concurrency=2, requests_per_window=None, window_s=60.0),
        poll_interval=5.0,
        deadline=2_000.0,
    )
    stop = View(pending=5, running=[], to_store=0, stop_submitting="too many failures")
    assert planner.decide(stop, 1_000.0) == BatchStep(BatchAction.DONE, reason="too many failures")
    waiting = View(pending=5, running=[990.0], to_store=0, stop_submitting="too many failures")
    assert planner.decide(waiting, 1_000.0).action in (
        BatchAction.POLL,
        BatchAction.SLEEP,
    )  # running jobs are waited for
    assert planner.decide(View(pending=1, running=[], to_store=0, fatal="401"), 1_000.0).reason == "401"
    assert planner.decide(View(pending=1, running=[1.0], to_store=0), 2_000.0).reason == "deadline"


def known_planner(duration: float = 16.0) -> Planner:
    planner = Planner(limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0), poll_interval=2.0)
    for _ in range(3):
        planner.learn(duration)
    planner.polled(1_000.0)
    return planner


def test_defer_only_when_the_quiet_time_until_the_next_due_job_is_worth_a_resume() -> None:
    planner = known_planner()
    view = View(pending=5, running=[1_000.0] * 10, to_store=0)  # due at 1,016.05
    sleep = planner.decide(view, 1_000.5)
    # no read before the wave's expected end: the batch's jobs are alike
    assert sleep.action is BatchAction.SLEEP and sleep.seconds == pytest.approx(15.55)
    leave, wake = planner.defer_until(view, sleep, now=1_000.5, resume_lead=5.0, min_defer=10.0)
    assert leave and wake == pytest.approx(1_011.05)
    leave, _ = planner.defer_until(view, sleep, now=1_002.0, resume_lead=5.0, min_defer=10.0)
    assert not leave  # 9.05 s of quiet is not worth a resume
    leave, wake = planner.defer_until(view, sleep, now=1_015.5, resume_lead=5.0, min_defer=0.0)
    assert leave and wake == pytest.approx(1_015.5)  # 0 always defers
    assert planner.defer_until(
        view, BatchStep(BatchAction.POLL), now=1_000.5, resume_lead=5.0, min_defer=0.0
    ) == (
        False,
        None,
    )


def test_before_any_job_ended_the_batch_defers_once_its_jobs_prove_long() -> None:
    planner = Planner(limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0), poll_interval=2.0)
    view = View(pending=5, running=[1_000.0] * 10, to_store=0)
    step = BatchStep(BatchAction.SLEEP, seconds=1.0)
    assert planner.defer_until(view, step, now=1_020.0, resume_lead=5.0, min_defer=10.0) == (False, None)
    assert planner.defer_until(view, step, now=1_031.0, resume_lead=5.0, min_defer=10.0) == (True, None)


def test_a_refusal_delaying_the_next_submission_is_a_reason_to_defer() -> None:
    planner = known_planner()
    planner.refused(until=1_060.0, all_requests=False)
    view = View(pending=5, running=[], to_store=0)
    step = planner.decide(view, 1_000.0)
    assert step.action is BatchAction.SLEEP and step.seconds == pytest.approx(60.0)
    assert planner.defer_until(view, step, now=1_000.0, resume_lead=5.0, min_defer=10.0) == (True, 1_055.0)


def test_statuses_are_known_as_of_the_last_read_or_a_later_submission() -> None:
    planner = Planner(limits=Limits(concurrency=10, requests_per_window=60, window_s=60), poll_interval=30)
    assert planner.statuses_known_at([]) is None
    assert planner.statuses_known_at([100.0, 105.0]) == 100.0  # never read: known when submitted
    planner.polled(110.0)
    assert planner.statuses_known_at([100.0, 112.0]) == 110.0  # one job was last seen by the read
    assert planner.statuses_known_at([111.0, 112.0]) == 111.0  # both submitted after it


def _running(running: list[float], pending: int = 0) -> View:
    return View(pending=pending, running=running, to_store=0)


def test_a_deferred_batchs_trigger_first_reads_where_the_planner_would() -> None:
    limits = Limits(concurrency=10, requests_per_window=60, window_s=60)
    young = Planner(limits=limits, poll_interval=10)
    assert young.trigger_read_at(_running([]), 103.0) is None
    young.polled(103.0)
    assert young.trigger_read_at(_running([100.0, 100.5]), 103.0) == pytest.approx(
        113.0
    )  # a poll interval after its read
    learned = Planner(limits=limits, poll_interval=10, durations=[16.0] * 5)
    learned.polled(103.0)
    # Due at 116.5 and more: not read at 113.0, a poll interval after the task's read, as before.
    assert learned.trigger_read_at(_running([100.0, 100.5]), 103.0) == pytest.approx(
        learned.next_poll_at([100.0, 100.5])
    )
    assert learned.trigger_read_at(_running([100.0, 100.5]), 103.0) > 116.5
    late = Planner(limits=limits, poll_interval=10, durations=[2.0] * 5)
    late.polled(103.0)
    assert late.trigger_read_at(_running([102.0]), 103.0) == pytest.approx(
        113.0
    )  # never sooner than the interval


def test_a_deferred_batchs_trigger_reads_for_its_slots_no_sooner_than_the_window_allows_their_refills() -> (
    None
):
    planner = Planner(limits=Limits(concurrency=4, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    planner.learn(4.0)
    full = _running([1_000.0] * 4, pending=10)
    # others spent the window down to two requests: a read at the jobs' end (1,004) would free
    # slots that no group of refills could fill before the reset, and take a request the others
    # could use
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=2, reset_at=1_030.0, retry_at=None))
    step = planner.decide(full, 1_000.5)
    assert step.action is BatchAction.SLEEP
    assert planner.trigger_read_at(full, 1_000.5) == pytest.approx(1_030.0 + RESET_MARGIN)
    assert planner.trigger_read_at(full, 1_000.5) == pytest.approx(1_000.5 + step.seconds)
    # with nothing left to submit the read is for the results: at the jobs' end
    assert planner.trigger_read_at(_running([1_000.0] * 4), 1_000.5) < 1_005.5
    # a window with room for the refills: the read goes when the jobs are due
    roomy = Planner(limits=Limits(concurrency=4, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    roomy.learn(4.0)
    roomy.saw_rate_limit(RateLimitInfo(limit=60, remaining=50, reset_at=1_030.0, retry_at=None))
    assert roomy.trigger_read_at(full, 1_000.5) < 1_005.5


def test_a_refusal_for_the_accounts_job_slots_halves_the_batchs_slots_and_each_end_gives_one_back() -> None:
    planner = Planner(
        limits=Limits(concurrency=10, requests_per_window=600, window_s=60.0), poll_interval=5.0
    )
    # a group refused for the account's job slots while the batch holds 3: half its 10 slots, not
    # the 3 it holds (nor one when it holds none: every refill would then cost a status read)
    planner.refused(until=1_001.0, all_requests=False, running=3)
    planner.refused(until=1_001.0, all_requests=False, running=3)  # the same group's other refusals
    assert planner.job_slots == 5
    step = planner.decide(View(pending=20, running=[990.0] * 3, to_store=0), 1_000.5)
    assert step.action is not BatchAction.SUBMIT  # the API asked to wait
    # two slots free, but the account's were full: one item at a time until a job of its own ends
    assert planner.decide(View(pending=20, running=[990.0] * 3, to_store=0), 1_002.0) == BatchStep(
        BatchAction.SUBMIT, count=1
    )
    # each of its own jobs that ends gives one slot back
    planner.learn(4.0)
    assert planner.job_slots == 6
    # refused again after one of its jobs ended: halved again, never below what it holds
    planner.refused(until=1_003.0, all_requests=False, running=4)
    assert planner.job_slots == 4
    planner.refused(until=1_003.0, all_requests=False, running=0)
    assert planner.job_slots == 4  # one halving per round of refusals
    for _ in range(6):  # the others' work is over: the plan's slots are back within a round
        planner.learn(4.0)
    assert planner.job_slots == 10
    fresh = Planner(limits=Limits(concurrency=10, requests_per_window=600, window_s=60.0), poll_interval=5.0)
    fresh.refused(until=1_001.0, all_requests=False, running=0)
    assert fresh.job_slots == 5


def test_batches_sharing_an_account_stop_asking_for_slots_the_others_hold() -> None:
    api = FakeApi(duration=4.0, concurrency=10, per_window=100_000, window=60.0)
    sims = [
        Sim(
            n=30,
            api=api,
            planner=Planner(
                limits=Limits(concurrency=10, requests_per_window=None, window_s=60.0), poll_interval=5.0
            ),
        )
        for _ in range(3)
    ]
    run_together(sims)
    assert all(sorted(sim.stored) == list(range(30)) for sim in sims)
    # a batch tries for one slot more as each of its jobs ends, one item at a time once refused:
    # refused for fewer than half the 90 jobs, not once per wait, and the account's slots stay full
    assert api.refusals < 45, api.refusals
    assert max(sim.now for sim in sims) - 1_000.0 <= 1.1 * 9 * 4.0  # 90 jobs of 4 s in 10 slots


def test_the_others_are_left_what_they_spend_at_their_pace_never_more_than_the_even_share() -> None:
    planner = Planner(limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    # a fresh window: one round of job slots at once
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=59, reset_at=1_060.0, retry_at=None))
    assert planner.decide(View(pending=30, running=[], to_store=0), 1_000.0) == BatchStep(
        BatchAction.SUBMIT, count=10
    )
    # halfway through, other DAGs on the account have spent it down to 10: wait for the even share
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=10, reset_at=1_060.0, retry_at=None))
    step = planner.decide(View(pending=30, running=[], to_store=0), 1_030.0)
    assert step.action is BatchAction.SLEEP and step.seconds == pytest.approx(10.0)
    # an answer at 1035: the others spent 3 more since 1030, 0.3 a second over the last 10 s, 6 of
    # the 20 s left at 1040; only what they go on spending is kept from the batch (not the even
    # share, 20), past its burst of 11: all of what is likely left of the 6 at 1040, less what they
    # have spent since the answer (5 s at 0.3 a second)
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=6, reset_at=1_060.0, retry_at=None))
    planner.decide(View(pending=30, running=[], to_store=0), 1_035.0)
    assert planner.window.others_pace(1_040.0) == pytest.approx(0.3)
    assert planner.available_requests(1_040.0) == pytest.approx(4.5)


def test_a_shared_window_is_judged_by_what_the_others_spent_since_the_last_answer() -> None:
    window = RequestWindow(requests_per_window=60, window_s=60.0)
    window.saw(RateLimitInfo(limit=60, remaining=59, reset_at=1_060.0, retry_at=None))
    assert window.available(1_000.0, burst=0) == 59  # alone: all of it
    window.saw(RateLimitInfo(limit=60, remaining=20, reset_at=1_060.0, retry_at=None))  # 38 others'
    window.available(1_010.0, burst=0)
    window.saw(RateLimitInfo(limit=60, remaining=4, reset_at=1_060.0, retry_at=None))  # 15 more
    assert window.shared and window.others_pace(1_020.0) == pytest.approx(1.5)
    assert window.remaining_now(1_020.0) == 4  # the answer just judged
    assert window.remaining_now(1_022.0) == pytest.approx(1.5)  # 2 s at 15 in the last 12 s
    assert window.available(1_023.0, burst=20) == 0  # likely spent by the others: no request
    # the reset, or an answer after RECENT_S seconds without one, tells what is left
    assert window.ready_at(1_023.0, 1, burst=20, fallback=60.0) < 1_060.0
    assert window.remaining_now(1_020.0 + RECENT_S + 0.1) == 4


def test_a_short_batch_alone_on_the_account_keeps_to_the_bound_of_its_job_slots() -> None:
    # 40 items of 3-s jobs on 10 slots and 60 requests a minute: the window holds the whole batch, so
    # nothing but the slots should pace it (no even share of a window no one else spends)
    sim = make(40, duration=3.0, r=60, w=60.0)
    sim.submit_seconds = 0.05
    sim.run()
    assert sorted(sim.stored) == list(range(40))
    makespan = sim.now - (sim.first_submit or 0)
    # the plan's bound does not count the batch's own round trips: a wave's submissions take 0.5 s
    assert makespan <= 1.10 * lower_bound(40, 10, 3.0, 60, 60.0) + 10 * 0.05, makespan


def test_each_freed_slot_is_refilled_when_its_job_is_due_not_when_its_wave_is() -> None:
    # submissions 0.15 s apart: the jobs of a wave end over 1.5 s, each slot is refilled as its own
    # job ends (one read for the jobs due together), not after the last of its wave
    sim = make(30, duration=16.0)
    sim.planner.durations.extend([16.0] * 3)
    sim.submit_seconds = 0.15
    sim.run()
    makespan = sim.now - (sim.first_submit or 0)
    assert makespan <= lower_bound(30, 10, 16.0, 60, 15.0) + 10 * 0.15 + 1.0, makespan
    assert sim.status_requests() / 30 < 0.5, sim.status_requests()


def test_jobs_seen_running_past_their_expected_end_are_read_again_soon() -> None:
    # every job takes a little longer than the first one did: the read at the expected end finds it
    # running, and the next read comes a twentieth of the duration later, not a whole second
    sim = make(40, duration=3.0, r=600, w=60.0)
    sim.api.durations = [3.0] + [3.2] * 39
    sim.run()
    makespan = sim.now - (sim.first_submit or 0)
    assert makespan <= 4 * 3.2 * 1.10, makespan


def shared_account(*, c: int = 10, r: int = 60, w: float = 60.0, duration: float = 4.0) -> list[Sim]:
    """Two batches of 30 and one of 12 on one account, started together."""
    api = FakeApi(duration=duration, concurrency=c, per_window=r, window=w)
    sims = []
    for n in (30, 30, 12):
        limits = Limits(concurrency=c, requests_per_window=r, window_s=w)
        planner = Planner(limits=limits, poll_interval=10.0)
        sims.append(Sim(n=n, api=api, planner=planner, strict=False, submit_seconds=0.05))
    return sims


def test_batches_sharing_the_accounts_window_spend_it_on_submissions() -> None:
    # 72 submissions at 60 a minute bound the three batches together: every status read that takes
    # a request a submission waits for pushes the end further into the next window
    sims = shared_account()
    run_together(sims)
    assert [sorted(sim.stored) for sim in sims] == [list(range(sim.n)) for sim in sims]
    start = min(sim.first_submit or math.inf for sim in sims)
    makespan = max(sim.finished_at or 0.0 for sim in sims) - start
    bound = lower_bound(72, 10, 4.0, 60, 60.0)
    api = sims[0].api
    statuses = sum(1 for _, kind in api.requests if kind == "status")
    # each leaves the others what they spend at their pace (not the even share each, as if alone:
    # 1.58 of the bound), so the second window's work is done at once, not spread to its reset
    assert makespan <= 1.45 * bound, (makespan, bound, statuses, api.window_refusals)
    assert statuses <= 40, statuses
    # the three hold 21 slots of 10 between them: each is refused about once per round of its
    # own jobs, when it tries for one slot more
    assert api.window_refusals + api.refusals <= 13, (api.window_refusals, api.refusals)


def first(sizes: Iterator[int], count: int) -> list[int]:
    return [next(sizes) for _ in range(count)]


def test_groups_double_from_one_in_the_first_wave_and_while_the_window_is_shared() -> None:
    limits = Limits(concurrency=10, requests_per_window=60, window_s=60.0)
    planner = Planner(limits=limits, poll_interval=5.0)
    # the first wave: one submission first, whose answer shows whether anyone else sends now
    sizes = planner.group_sizes()
    assert next(sizes) == 1
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=59, reset_at=1_060.0, retry_at=None))
    assert first(sizes, 2) == [10, 10]  # no one else: the rest at once
    # alone in the window since (only its own answers spent it): one group takes the wave
    for remaining in range(58, 49, -1):
        planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=remaining, reset_at=1_060.0, retry_at=None))
    assert first(planner.group_sizes(), 3) == [10, 10, 10]
    # others spend the window too: doubling from one again, judged before each group
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=40, reset_at=1_060.0, retry_at=None))
    sizes = planner.group_sizes()
    assert first(sizes, 3) == [1, 2, 4]
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=60, reset_at=1_120.0, retry_at=None))
    assert next(sizes) == 10  # a new window, no one else in it yet


def test_groups_go_one_at_a_time_once_others_requests_come_in_between() -> None:
    planner = Planner(limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=59, reset_at=1_060.0, retry_at=None))
    sizes = planner.group_sizes()  # a first wave, as two batches started together send theirs
    assert next(sizes) == 1
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=56, reset_at=1_060.0, retry_at=None))
    # another batch's requests came in with its answer: it fills the same free slots now
    assert next(sizes) == 1
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=54, reset_at=1_060.0, retry_at=None))
    assert next(sizes) == 1  # and still does
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=53, reset_at=1_060.0, retry_at=None))
    # only its own answer since, and the window is not shared yet; but the other batch is still
    # sending: doubling from one again for the rest of the wave, not the rest at once
    assert [next(sizes), next(sizes)] == [2, 4]
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=45, reset_at=1_060.0, retry_at=None))
    assert [next(sizes), next(sizes), next(sizes)] == [1, 2, 4]  # others since, and shared
    assert first(planner.group_sizes(), 2) == [1, 2]  # the next wave, in a shared window


def test_groups_take_the_wave_at_once_where_no_window_limits_the_requests() -> None:
    planner = Planner(
        limits=Limits(concurrency=10, requests_per_window=None, window_s=60.0), poll_interval=5.0
    )
    assert first(planner.group_sizes(), 2) == [10, 10]


def test_batches_with_a_pools_share_each_spend_the_shared_window_on_submissions() -> None:
    # a pool's hard share each (4 + 4 slots, and 2 for a third), started a few seconds apart on one
    # account whose window binds: refilled one slot at a time, each job's end took a read of its own
    # and the window's last minute was kept for the others' pace until its reset (1.94 of the
    # bound, 52 reads); refilled by groups and finished as soon as the work fits, much less
    api = FakeApi(duration=4.0, concurrency=10, per_window=60, window=60.0)
    sims = []
    for n, share, late in ((30, 4, 0.0), (30, 4, 3.0), (12, 2, 5.0)):
        limits = Limits(concurrency=share, requests_per_window=60, window_s=60.0)
        planner = Planner(limits=limits, poll_interval=10.0)
        sims.append(Sim(n=n, api=api, planner=planner, strict=False, submit_seconds=0.05, now=1_000.0 + late))
    run_together(sims)
    assert [sorted(sim.stored) for sim in sims] == [list(range(sim.n)) for sim in sims]
    start = min(sim.first_submit or math.inf for sim in sims)
    makespan = max(sim.finished_at or 0.0 for sim in sims) - start
    bound = lower_bound(72, 10, 4.0, 60, 60.0)
    statuses = sum(1 for _, kind in api.requests if kind == "status")
    assert makespan <= 1.35 * bound, (makespan, bound, statuses)
    assert statuses <= 42, statuses
    assert api.refusals == 0 and api.window_refusals <= 2, (api.refusals, api.window_refusals)


def test_a_batch_with_a_share_of_the_slots_keeps_for_the_others_what_it_spends_itself() -> None:
    # the batch that started first spent 20 of the window in 10 s, the others 5 (a batch waiting for
    # the window shows no pace of its own): kept for them at their pace alone, it would take 15
    # more now; with a share of the job slots, where the work each has left on its own slots at the
    # reset ends the whole, it keeps them what it spends itself, until they catch up
    windows = {
        share: RequestWindow(requests_per_window=60, window_s=60.0, keep_own_pace=share)
        for share in (False, True)
    }
    for window in windows.values():
        for own in range(1, 21):
            others = 5 if own == 20 else 0
            window.saw(RateLimitInfo(limit=60, remaining=60 - own - others, reset_at=1_060.0, retry_at=None))
    assert windows[True].others == 5 and windows[True].shared
    assert windows[False].available(1_010.0, burst=5) == pytest.approx(15.0)
    assert windows[True].available(1_010.0, burst=5) == 0
    # a batch that spent less than the others keeps for them their pace, as without a share
    for window in windows.values():
        window.saw(RateLimitInfo(limit=60, remaining=59, reset_at=1_120.0, retry_at=None))  # a new window
        window.saw(RateLimitInfo(limit=60, remaining=52, reset_at=1_120.0, retry_at=None))  # 6 others'
    assert windows[True].available(1_070.0, burst=5) == windows[False].available(1_070.0, burst=5) == 27


@pytest.mark.parametrize("late", [(0.0, 4.4, 3.0), (5.0, 3.0, 0.0)])
def test_batches_with_a_pools_share_leave_each_other_the_same_work_for_the_reset(
    late: tuple[float, float, float],
) -> None:
    # 4 + 4 slots and 2 of a pool, started a few seconds apart, the window binding: the batch that
    # started first took the share the others waited for, left them two rounds more than itself at
    # the reset, and its slots idle while they worked them off (1.27 of the bound)
    api = FakeApi(duration=4.0, concurrency=10, per_window=60, window=60.0)
    sims = []
    for (n, share), at in zip(((30, 4), (30, 4), (12, 2)), late, strict=True):
        limits = Limits(concurrency=share, requests_per_window=60, window_s=60.0, slot_share=True)
        planner = Planner(limits=limits, poll_interval=10.0)
        sims.append(Sim(n=n, api=api, planner=planner, strict=False, submit_seconds=0.05, now=1_000.0 + at))
    run_together(sims)
    assert [sorted(sim.stored) for sim in sims] == [list(range(sim.n)) for sim in sims]
    start = min(sim.first_submit or math.inf for sim in sims)
    ends = [(sim.finished_at or math.inf) - start for sim in sims]
    assert max(ends) <= 1.25 * lower_bound(72, 10, 4.0, 60, 60.0), ends
    assert abs(ends[0] - ends[1]) < 4.0, ends  # the two batches of 30 end in the same round


def test_in_a_shared_window_jobs_due_close_together_are_read_together() -> None:
    planner = Planner(limits=Limits(concurrency=4, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    planner.learn(4.0)
    running = [1_000.0, 1_000.2, 1_000.2, 1_000.2]
    # alone: each freed slot is read (and refilled) at its own job's end
    assert planner.next_poll_at(running, refill=True) == pytest.approx(1_004.04)
    # others spend the window too: one read after the last of the jobs due together
    planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=40, reset_at=1_050.0, retry_at=None))
    assert planner.window.shared
    assert planner.next_poll_at(running, refill=True) == pytest.approx(1_004.24)
