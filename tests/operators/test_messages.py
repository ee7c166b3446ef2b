"""What a person reads in the task log when the key is wrong or a paid image is reused, on both paths."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.client import Job
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from tests.conftest import run_dag, task_states
from tests.operators.test_flux_decisions import FakeClient, FakeStore, _operator, _record

_ids = itertools.count()


def _wrong_key(emulator: Any, monkeypatch: pytest.MonkeyPatch, conn_id: str) -> None:
    conn = {"conn_type": "doitong", "host": emulator.base_url, "password": "not-a-real-key-0123"}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def _failure(out: str) -> str:
    (line,) = re.findall(r"AirflowFailException: (.*)", out)
    return line


@pytest.mark.parametrize("operator", ["single", "batch"])
def test_a_wrong_key_names_the_connection_and_says_what_failed_once(
    operator: str, emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: Any
) -> None:
    _wrong_key(emulator, monkeypatch, "doitong_staging")
    with DAG(f"doitong_msg_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:
        if operator == "single":
            FluxGenerateOperator(task_id="generate", prompt="ok", doitong_conn_id="doitong_staging")
        else:
            FluxBatchOperator(
                task_id="generate",
                prompts=["ok"],
                output_path=str(tmp_path),
                doitong_conn_id="doitong_staging",
            )
    run = run_dag(dag)
    assert task_states(run) == {"generate": "failed"}
    message = _failure(capfd.readouterr().out)
    assert "the Airflow connection 'doitong_staging'" in message and "HTTP 401" in message, message
    assert message.count("Doitong submission") <= 1 and "not-a-real-key" not in message, message


def test_a_reused_image_is_not_reported_as_charged_now(capfd: pytest.CaptureFixture[str]) -> None:
    paid = Job.from_api(
        {"id": "old-job", "status": "completed", "url": "https://cdn.doitong.com/x.jpg", "creditCost": 10}
    )
    result = _operator(FakeClient(jobs={"old-job": paid})).execute(
        {"task_state_store": FakeStore(_record("stored"))}
    )
    out = capfd.readouterr().out
    assert result["job_id"] == "old-job" and "reused at no new charge" in out
    assert "charged 10 credits by an earlier try" in out and "costs 0 credits now" in out
    assert "Doitong job old-job charged" not in out
