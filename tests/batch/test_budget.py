"""``max_credits`` against real charges: the projection the runner asks before each submission."""

from __future__ import annotations

from airflow_provider_doitong.batch.budget import CreditBudget
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
