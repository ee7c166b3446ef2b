"""``FluxBatchOperator``'s review options, checked when the task is built, and the answer it reads."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_doitong import _compat
from airflow_provider_doitong._compat import AirflowFailException, AirflowOptionalProviderFeatureException
from airflow_provider_doitong.operators import review
from airflow_provider_doitong.operators.batch import FluxBatchOperator

WHEN = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def build(**kwargs: Any) -> FluxBatchOperator:
    return FluxBatchOperator(task_id="b", prompts=["a kite"], output_path="/tmp/out", **kwargs)


def test_defaults_ask_no_one() -> None:
    operator = build()
    assert operator.require_approval is False and operator.approval_timeout is None
    assert operator.on_approval_timeout == "reject"


def test_the_timeout_is_read_as_seconds_or_a_timedelta() -> None:
    assert build(approval_timeout=90).approval_timeout == timedelta(seconds=90)
    assert build(approval_timeout=timedelta(hours=2)).approval_timeout == timedelta(hours=2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_approval_timeout": "fail"}, "on_approval_timeout must be one of"),
        ({"approval_timeout": 0}, "approval_timeout must be a positive"),
        ({"approval_timeout": timedelta(seconds=-5)}, "approval_timeout must be a positive"),
        ({"approval_timeout": "1h"}, "approval_timeout must be a positive"),
    ],
)
def test_unworkable_options_are_refused_when_the_task_is_built(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build(require_approval=True, **kwargs)


def test_without_human_in_the_loop_asking_for_approval_is_refused_when_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if _compat.HUMAN_REVIEW_UNAVAILABLE is None:  # as on Airflow 3.0, which has no requests
        monkeypatch.setattr(_compat, "HUMAN_REVIEW_UNAVAILABLE", "review needs Airflow 3.1 or later")
    with pytest.raises(
        AirflowOptionalProviderFeatureException, match=r"require_approval=True: .*needs Airflow 3\.1 or later"
    ):
        build(require_approval=True)
    assert build().require_approval is False  # a batch without review still builds


@pytest.mark.skipif(_compat.HUMAN_REVIEW_UNAVAILABLE is not None, reason="needs Airflow 3.1+")
def test_this_airflow_can_ask() -> None:
    assert build(require_approval=True).require_approval is True


def test_a_person_s_answer_names_them() -> None:
    event = {
        "chosen_options": ["Approve"],
        "responded_by_user": {"id": 7, "name": "ada"},
        "responded_at": WHEN,
        "timedout": False,
    }
    assert review.decision(event) == {
        "decision": "approved",
        "by": "ada",
        "by_id": "7",
        "at": "2026-01-02T03:04:05+00:00",
        "timed_out": False,
    }


def test_the_timeout_s_answer_names_no_one() -> None:
    event = {"chosen_options": ["Reject"], "responded_by_user": None, "responded_at": WHEN, "timedout": True}
    record = review.decision(event)
    assert record["decision"] == "rejected" and record["timed_out"] is True
    assert record["by"] is None and record["by_id"] is None


@pytest.mark.parametrize(
    "event",
    [
        {"error": "The timeout has passed", "error_type": "timeout"},
        {"chosen_options": ["Approve", "Reject"], "responded_by_user": {"id": "1", "name": "x"}},
        {"chosen_options": [], "responded_by_user": {"id": "1", "name": "x"}},
    ],
)
def test_anything_but_one_answer_fails_the_task(event: dict[str, Any]) -> None:
    with pytest.raises(AirflowFailException, match="review"):
        review.decision(event)


def test_the_request_lists_each_stored_image_and_a_prompt_cannot_add_markdown(tmp_path: Any) -> None:
    from airflow_provider_doitong.batch import manifest

    hostile = "a fox ![x](https://tracker.example/p.png) <img src=x> | extra cell\n# heading"
    entries = [
        {"number": 1, "status": "stored", "file": "0001-a-fox.jpg", "prompt": hostile},
        {"number": 2, "status": "failed", "file": None, "prompt": "a failed one"},
    ]
    manifest.write_manifest(str(tmp_path), manifest.build_manifest(entries, title="t"))
    summary = {"folder": str(tmp_path), "contact_sheet": f"{tmp_path}/index.html", "stored": 1, "items": 2}
    body = review.request_body(
        {**summary, "failed": 1, "credits_spent": 10}, "http://airflow/doitong/batch?x=1"
    )
    assert body.startswith(
        f"[Open the contact sheet](http://airflow/doitong/batch?x=1) ({tmp_path}/index.html)"
    )
    assert "1 of 2 images stored, 1 failed, 10 credits spent" in body
    (row,) = [line for line in body.splitlines() if line.startswith("| `")]
    assert row.startswith("| `0001-a-fox.jpg` | a fox ")
    assert r"a fox \!\[x\]\(https://tracker\.example/p\.png\) \<img src=x\> \| extra cell \# heading |" in row
    assert "a failed one" not in body
    assert row.count("|") - row.count("\\|") == 3  # one row of two cells
