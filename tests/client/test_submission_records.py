"""A task's submission record, read and written through one object for one rendered request."""

from __future__ import annotations

from typing import Any

from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.client.submission import STATE_KEY, Action, Records, RecordState

FOX = ImageRequest(provider="flux-krea", prompt="a fox", width=512, height=512)
OWL = ImageRequest(provider="flux-krea", prompt="an owl", width=512, height=512)


class Store:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


def test_what_one_try_writes_the_next_try_plans_from() -> None:
    store = Store()
    Records(store, FOX).save(RecordState.SUBMITTED, "job-1")
    step = Records(store, FOX).plan(on_clear="reuse")
    assert step.action is Action.READ and step.job_id == "job-1"
    assert Records(store, OWL).plan(on_clear="reuse").action is Action.SUBMIT  # another request


def test_refusals_are_counted_and_a_forgotten_record_submits_afresh() -> None:
    store = Store()
    records = Records(store, FOX)
    records.save(RecordState.REFUSED, refusals=3)
    assert store.values[STATE_KEY]["refusals"] == 3 and store.values[STATE_KEY]["at"] > 0
    assert records.plan(on_clear="reuse").refusals == 3
    records.forget()
    assert STATE_KEY not in store.values
    assert records.plan(on_clear="reuse").action is Action.SUBMIT


def test_without_a_store_nothing_is_kept() -> None:
    records = Records(None, FOX)
    records.save(RecordState.SUBMITTING)
    records.forget()
    assert records.plan(on_clear="reuse").action is Action.SUBMIT
