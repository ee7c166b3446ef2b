"""Both operators in real Airflow (``dag.test()``) against hostile values from the emulator: reset
headers in milliseconds or absurd, and a ``creditCost`` that is not a count."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from doitong_emulator import FaultConfig
from tests.conftest import run_dag, task_states, xcom_value

_ids = itertools.count()


def _dag(operator: type, **kwargs: Any) -> DAG:
    with DAG(
        f"hostile_values_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False
    ) as dag:
        operator(task_id="task", width=256, height=256, poll_interval=0.1, **kwargs)
    return dag


@pytest.mark.parametrize("form", ["epoch_ms", "absurd"])
def test_odd_reset_headers_do_not_freeze_a_sync_generate_wait(
    doitong_conn: Any, tmp_path: Path, form: str
) -> None:
    doitong_conn.set_faults(FaultConfig(time_headers=form))
    run = run_dag(_dag(FluxGenerateOperator, prompt="a lighthouse", output_path=f"{tmp_path}/"))
    assert task_states(run) == {"task": "success"}
    assert Path(xcom_value(run, "task")["output_path"]).stat().st_size > 0


@pytest.mark.parametrize("form", ["string", "negative"])
def test_a_credit_cost_that_is_not_a_count_is_unknown_not_a_failure(
    doitong_conn: Any, tmp_path: Path, form: str
) -> None:
    doitong_conn.set_faults(FaultConfig(credit_cost_as=form))
    single = run_dag(_dag(FluxGenerateOperator, prompt="a lighthouse", output_path=f"{tmp_path}/one/"))
    assert task_states(single) == {"task": "success"}
    assert xcom_value(single, "task")["credit_cost"] is None
    prompts = [f"a lighthouse, study {n}" for n in range(3)]
    batch = run_dag(_dag(FluxBatchOperator, prompts=prompts, output_path=str(tmp_path / "many")))
    assert task_states(batch) == {"task": "success"}
    summary = xcom_value(batch, "task")
    assert summary["stored"] == 3 and summary["credits_spent"] == 0
    assert int(doitong_conn.stats()["requests"]["submit"]) == 4  # nothing was paid twice


def test_an_output_host_read_two_ways_fails_without_a_download(
    doitong_conn: Any, tmp_path: Path, capfd: Any
) -> None:
    doitong_conn.set_faults(FaultConfig(two_way_output_host="127.0.0.1"))
    run = run_dag(_dag(FluxGenerateOperator, prompt="a lighthouse", output_path=f"{tmp_path}/", retries=2))
    assert task_states(run) == {"task": "failed"}
    assert run.get_task_instances()[0].try_number == 1  # refused for good, not a download to retry
    assert "backslash" in capfd.readouterr().out
    assert [e for e in doitong_conn.request_log() if e["kind"] == "download"] == []
    assert list(tmp_path.iterdir()) == []
