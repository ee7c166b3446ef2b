"""``max_credits`` against real charges, and the credit floor: what the runner asks before each submission."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from airflow_provider_doitong.batch.budget import CreditBudget, counting_hits, within_floor
from airflow_provider_doitong.batch.items import budget_problem
from airflow_provider_doitong.batch.planner import Limits, Planner
from airflow_provider_doitong.batch.runner import BatchRunner
from airflow_provider_doitong.client import DoitongServerError, DoitongUnauthorized
from airflow_provider_doitong.client.retry import RetryPolicy
from airflow_provider_doitong.client.untrusted import read_credit_cost


def test_the_projection_follows_real_charges_and_stops_past_max_credits() -> None:
    budget = CreditBudget([10, 10, 10, 10], max_credits=40)
    assert budget.projected() == 40 and budget.stop_reason() == ""
    assert budget.charged(0, 10) == 0  # as estimated
    assert budget.charged(1, 25) == 15  # over: reported once
    assert budget.charged(1, 25) == 0
    assert budget.projected() == 55
    assert budget.stop_reason() == (
        "max_credits=40 would be passed: Doitong charged 15 credits more than estimated, so the batch "
        "would cost 55"
    )
    # item 2 fails for good without a charge, item 3 costs less: back within the cap
    assert budget.charged(3, 0) == 0
    assert budget.projected(dropped=[2]) == 35 and budget.stop_reason(dropped=[2]) == ""


def test_a_refund_takes_a_charge_back_and_unknown_charges_count_at_their_estimate() -> None:
    budget = CreditBudget([10, 20], max_credits=None)
    budget.charged(0, 50)
    budget.charged(1, None)  # not said: the estimate stands
    budget.charged(1, read_credit_cost(-5))  # nonsense: the parser makes it unknown
    assert budget.projected() == 70
    budget.refunded(0)
    assert budget.projected() == 30
    assert budget.stop_reason() == ""  # no cap: only watched


def test_charges_learnt_from_the_ledger_are_not_reported_again() -> None:
    budget = CreditBudget([10, 10], max_credits=15)
    budget.learn([(0, 30), (1, None)])
    assert budget.projected() == 40 and budget.charged(0, 30) == 0
    assert "max_credits=15 would be passed" in budget.stop_reason()


def test_a_charge_that_is_not_a_count_of_credits_is_not_learnt() -> None:
    """The client's one parser reads creditCost; what it cannot count leaves the estimate standing."""
    charges = [read_credit_cost(v) for v in (20, 0, "20", -5, True, None, 2.5)]
    assert charges == [20, 0, None, None, None, None, None]
    budget = CreditBudget([10], max_credits=10)
    assert budget.charged(0, read_credit_cost("500")) == 0 and budget.projected() == 10


def test_within_floor_counts_the_next_items_that_keep_the_balance_at_the_floor() -> None:
    assert within_floor(balance=1_000, floor=900, estimates=[30, 30, 30, 30]) == 3
    assert within_floor(balance=1_000, floor=900, estimates=[50, 50, 10]) == 2  # exactly at the floor
    assert within_floor(balance=1_000, floor=990, estimates=[20, 5]) == 0  # in order: none jump the queue
    assert within_floor(balance=100, floor=0, estimates=[10] * 5) == 5
    assert within_floor(balance=80, floor=100, estimates=[1]) == 0  # already below it


def test_a_batch_that_would_end_below_the_floor_is_refused_before_anything_is_spent() -> None:
    problem = budget_problem(
        images=10, estimate=100, to_spend=100, balance=1_000, max_credits=None, credit_floor=950
    )
    assert problem is not None and "from 1000 to 900 credits, below its credit floor of 950" in problem
    assert (
        budget_problem(
            images=10, estimate=100, to_spend=100, balance=1_000, max_credits=None, credit_floor=900
        )
        is None
    )
    assert (
        budget_problem(images=10, estimate=100, to_spend=0, balance=None, max_credits=None, credit_floor=5)
        is None
    )


def _floor_runner(account: Any) -> Any:
    """What ``BatchRunner._within_floor`` reads of its runner: a client whose account read is ``account``."""

    def read() -> Any:
        if isinstance(account, Exception):
            raise account
        return SimpleNamespace(credits=account)

    planner = Planner(limits=Limits(concurrency=10, requests_per_window=60, window_s=60.0), poll_interval=5.0)
    return SimpleNamespace(
        credit_floor=900,
        stop_submitting="",
        stop_error=None,
        budget_stopped=False,
        items=[SimpleNamespace(request=SimpleNamespace(estimated_credits=40))] * 5,
        client=SimpleNamespace(get_account=read, last_rate_limit=None, retry_policy=RetryPolicy()),
        planner=planner,
        clock=lambda: 1_000.0,
        log=logging.getLogger("test"),
        ledger=SimpleNamespace(count=lambda *states: 5),
    )


def test_a_wave_keeps_the_items_within_the_floor_and_stops_at_the_next() -> None:
    runner = _floor_runner(1_000)
    assert BatchRunner._within_floor(runner, [0, 1, 2, 3, 4]) == [0, 1]  # 1,000 - 80 >= 900 > 1,000 - 120
    assert runner.budget_stopped and "credit floor is 900" in runner.stop_submitting


def test_an_account_read_that_cannot_succeed_stops_the_submissions_and_a_passing_one_waits() -> None:
    refused = _floor_runner(DoitongUnauthorized("bad key", status=401))
    assert BatchRunner._within_floor(refused, [0, 1]) == []
    assert isinstance(refused.stop_error, DoitongUnauthorized) and refused.stop_submitting
    down = _floor_runner(DoitongServerError("down", status=503))
    assert BatchRunner._within_floor(down, [0, 1]) == []
    assert down.stop_submitting == "" and down.planner.submissions_blocked_until > 1_000.0


def test_counting_hits_asks_the_cache_only_when_the_full_estimate_is_refused() -> None:
    asked: list[str] = []

    def free() -> int:
        asked.append("cache")
        return 30

    def over_40(off: int) -> str | None:
        return f"{50 - off} > 40" if 50 - off > 40 else None

    assert counting_hits(lambda off: None, free) is None and asked == []  # within it: nothing read
    assert counting_hits(over_40, free) is None and asked == ["cache"]  # 20 once the hits cost 0
    assert counting_hits(over_40, lambda: 0) == "50 > 40"  # nothing cached: refused as before
    over_anyway = counting_hits(lambda off: f"{100 - off} > 40" if 100 - off > 40 else None, free)
    assert over_anyway == "70 > 40"  # still over: the reason counts the hits at 0
