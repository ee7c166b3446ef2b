"""The account's request window as one batch sees it: alone it spends what its work needs; once
others spend the window too, no faster than evenly. Pure decisions on plain Unix times."""

from __future__ import annotations

import pytest

from airflow_provider_doitong.batch.planner import BatchAction, BatchStep, Limits, Planner, View
from airflow_provider_doitong.client.ratelimit import RateLimitInfo


def _planner() -> Planner:
    return Planner(limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0), poll_interval=5.0)


def _answers(planner: Planner, remaining: list[int], reset_at: float = 1_060.0) -> None:
    for left in remaining:
        planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=left, reset_at=reset_at, retry_at=None))


def test_alone_on_the_account_the_batch_spends_the_window_as_its_work_needs() -> None:
    planner = _planner()
    _answers(planner, list(range(59, 29, -1)))  # thirty answers, all of them its own
    assert planner.available_requests(1_010.0) == 30  # not an even share of the 50 s left
    view = View(pending=200, running=[1_009.0] * 5, to_store=0)
    assert planner.decide(view, 1_010.0) == BatchStep(BatchAction.SUBMIT, count=5)
    # then others spend it too: 10 requests between two of its own answers are someone else's
    _answers(planner, [19])
    # 19 left for 50 s: an even share of the rest (50) less a round of job slots (11) is 39: none now
    assert planner.available_requests(1_010.0) == 0
    assert planner.available_requests(1_050.0) == 19  # 10 s left: the even share no longer holds any back
    # each window is judged by itself: alone in the next one (the others' work is over), all of it
    _answers(planner, [59], reset_at=1_120.0)
    assert planner.available_requests(1_060.0) == 59
    _answers(planner, [50], reset_at=1_120.0)  # ...until they spend it too
    assert planner.available_requests(1_060.0) == pytest.approx(50 - (60 - 11))


def test_the_same_answer_reported_twice_and_a_late_one_count_once() -> None:
    planner = _planner()
    rate = RateLimitInfo(limit=60, remaining=59, reset_at=1_060.0, retry_at=None)
    for _ in range(5):  # a download reports the last API answer again
        planner.saw_rate_limit(rate)
    _answers(planner, [57, 58])  # the answer to an earlier request arrives after a later one
    assert planner.rate is not None and planner.rate.remaining == 57
    assert planner.available_requests(1_010.0) == 57  # 3 requests, all its own: still alone
    # an answer from a window already over changes nothing
    _answers(planner, [2], reset_at=1_000.0)
    assert planner.available_requests(1_010.0) == 57


def test_a_batch_resumed_after_a_deferral_learns_the_window_with_one_request_first() -> None:
    before = _planner()
    _answers(before, list(range(59, 49, -1)))  # ten of its own answers, 50 left
    snapshot = before.window.snapshot()
    assert snapshot == [60, 50, 1_060.0, 10, 0.0]
    # resumed 20 s later: others may have spent the window meanwhile, so one request first
    resumed = Planner(
        limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0),
        poll_interval=5.0,
        window=snapshot,
        now=1_020.0,
    )
    view = View(pending=20, running=[], to_store=0)
    assert resumed.decide(view, 1_020.0) == BatchStep(BatchAction.SUBMIT, count=1)
    # its answer: 20 left, 29 spent by others since: the window is shared, no burst of 10
    _answers(resumed, [20])
    assert resumed.window.shared
    assert resumed.available_requests(1_020.0) < 10
    # a window already over, or a snapshot no batch wrote, is not taken up
    for value in ([60, 50, 1_010.0, 10], [60, 70, 1_060.0, 1], "60,50", [60, 50, True, 1], None):
        fresh = Planner(
            limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0),
            poll_interval=5.0,
            window=value,
            now=1_020.0,
        )
        assert fresh.rate is None
        assert fresh.decide(view, 1_020.0) == BatchStep(BatchAction.SUBMIT, count=10)


def test_a_batch_resumed_while_a_refusal_blocks_the_spent_window_sends_nothing_before_the_reset() -> None:
    limits = Limits(concurrency=10, requests_per_window=60, window_s=60.0)
    before = _planner()
    _answers(before, list(range(59, 54, -1)))  # its last answer said 55 left; others spent the rest
    before.refused(until=1_060.1, all_requests=True)  # a submission refused: the window is spent
    snapshot = before.window.snapshot()
    view = View(pending=20, running=[], to_store=0)
    # woken five seconds early to be back by the reset: no request into the spent window
    resumed = Planner(limits=limits, poll_interval=5.0, window=snapshot, now=1_055.0)
    step = resumed.decide(view, 1_055.0)
    assert step.action is BatchAction.SLEEP and step.seconds == pytest.approx(5.1)
    assert resumed.decide(view, 1_060.2) == BatchStep(BatchAction.SUBMIT, count=10)
    # a ledger written before the block was kept reads as before; a block beyond any window is not
    older = Planner(limits=limits, poll_interval=5.0, window=snapshot[:4], now=1_055.0)
    assert older.decide(view, 1_055.0) == BatchStep(BatchAction.SUBMIT, count=1)
    for block in (1e12, True):
        odd = Planner(limits=limits, poll_interval=5.0, window=[*snapshot[:4], block], now=1_055.0)
        assert odd.window.blocked_until == 0.0


def _pool_share(planner: Planner, *, others: int) -> None:
    """Answers of a window that others spend too: its own four, then ``others`` of theirs between two."""
    _answers(planner, [59, 58, 57, 56])
    _answers(planner, [55 - others])


def test_in_a_shared_window_free_slots_are_refilled_by_one_group_not_one_by_one() -> None:
    planner = Planner(limits=Limits(concurrency=4, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    _pool_share(planner, others=30)  # 25 left, most of it kept for the others' pace until the reset
    assert planner.window.shared
    # the first moment the window allows this batch a request (the share kept shrinks with time)
    now = next(
        t / 10 for t in range(10_050, 10_600) if planner.window.available(t / 10, burst=5, judge=False) >= 1
    )
    assert planner.available_requests(now) < 4
    view = View(pending=20, running=[], to_store=0)
    step = planner.decide(view, now)
    # four free slots: wait for the window to allow all four (their jobs then end together, and
    # one read sees them), rather than send what it allows now
    assert step.action is BatchAction.SLEEP, step
    assert planner.available_requests(now + step.seconds) >= 4
    assert planner.decide(view, now + step.seconds) == BatchStep(BatchAction.SUBMIT, count=4)
    # one slot free: it goes at once
    one_free = View(pending=20, running=[now - 1] * 3, to_store=0)
    assert planner.decide(one_free, now) == BatchStep(BatchAction.SUBMIT, count=1)
    # the window would allow the group only after its reset: what it allows now goes now
    other = Planner(limits=Limits(concurrency=4, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    _answers(other, [59, 58, 57, 56])
    _answers(other, [3])  # 3 left, 52 spent by the others: a group of four would wait for the reset
    assert other.decide(view, 1_058.0) == BatchStep(BatchAction.SUBMIT, count=3)


def test_a_read_that_frees_slots_in_a_shared_window_waits_for_a_whole_refill() -> None:
    planner = Planner(limits=Limits(concurrency=4, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    planner.learn(4.0)
    _pool_share(planner, others=30)
    # the first moment the window allows this batch two requests: a read and one submission
    now = next(
        t / 10 for t in range(10_050, 10_600) if planner.window.available(t / 10, burst=5, judge=False) >= 2
    )
    running = View(pending=20, running=[now - 5] * 4, to_store=0)  # all four ended a second ago
    step = planner.decide(running, now)
    assert step.action is BatchAction.SLEEP, step
    # the read comes once the window allows it and the four submissions after it
    assert planner.available_requests(now + step.seconds) >= 5
    assert planner.decide(running, now + step.seconds).action is BatchAction.POLL


def test_in_a_shared_window_the_batch_closest_to_done_spends_what_its_work_needs() -> None:
    def shared(pending: int) -> tuple[Planner, BatchStep]:
        planner = Planner(
            limits=Limits(concurrency=4, requests_per_window=60, window_s=60.0), poll_interval=5.0
        )
        _pool_share(planner, others=10)  # 45 left for 55 s, the others spending fast
        return planner, planner.decide(View(pending=pending, running=[], to_store=0), 1_005.0)

    # 3 submissions and a read or two: at most half of what is left, so it goes now, whatever the
    # others' pace would keep for them until the reset
    planner, step = shared(pending=3)
    assert step == BatchStep(BatchAction.SUBMIT, count=3)
    assert planner.available_requests(1_005.0) == 45
    # 40 items left: more than half, so the others keep what they spend at their pace
    planner, step = shared(pending=40)
    assert step.action is BatchAction.SLEEP
    # refused a job slot (other work holds some of its slots): spending faster takes slots from it
    planner = Planner(limits=Limits(concurrency=4, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    _pool_share(planner, others=10)
    planner.refused(until=1_004.0, all_requests=False, running=2)
    assert (
        planner.decide(View(pending=3, running=[1_001.0] * 2, to_store=0), 1_005.0).action
        is BatchAction.SLEEP
    )
