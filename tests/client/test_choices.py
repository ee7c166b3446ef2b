"""The one check of a value that must be one of a few names, and the message every caller gives."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_doitong.client import DoitongClient
from airflow_provider_doitong.client.choices import check_choice
from airflow_provider_doitong.client.protocol import build_account
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.operators.flux import FluxGenerateOperator


def test_a_choice_is_returned_and_anything_else_named() -> None:
    assert check_choice("mode", "b", ("a", "b")) == "b"
    for wrong in ("c", None, 1, "A"):
        with pytest.raises(ValueError, match=rf"^mode must be one of a, b, got {wrong!r}$"):
            check_choice("mode", wrong, ("a", "b"))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: FluxGenerateOperator(task_id="t", prompt="p", on_clear="keep"),
            "on_clear must be one of reuse, regenerate, got 'keep'",
        ),
        (
            lambda: FluxGenerateOperator(task_id="t", prompt="p", on_ambiguous_submission="retry"),
            "on_ambiguous_submission must be one of fail, resubmit, got 'retry'",
        ),
        (
            lambda: FluxBatchOperator(
                task_id="t", prompts=["p"], output_path="/tmp/x/", on_ambiguous_submission="retry"
            ),
            "on_ambiguous_submission must be one of fail, resubmit, got 'retry'",
        ),
        (
            lambda: FluxBatchOperator(task_id="t", prompts=["p"], output_path="/tmp/x/", on_daily_limit="x"),
            "on_daily_limit must be one of ",
        ),
        (lambda: DoitongClient(api_key="k-123456", transport="grpc"), "transport must be one of graphql, "),
        (lambda: build_account(transport="grpc"), "transport must be one of graphql, "),
    ],
    ids=[
        "on_clear",
        "on_ambiguous_submission",
        "batch-on_ambiguous_submission",
        "on_daily_limit",
        "client",
        "build",
    ],
)
def test_every_choice_is_refused_in_the_same_words(build: Any, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        build()
    assert str(refused.value).startswith(message)
