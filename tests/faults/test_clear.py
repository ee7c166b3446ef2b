"""Clearing a successful task on a real Airflow: a changed prompt is submitted anew, once; the same
request reuses its paid image, and the file is there either way."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from airflow_provider_doitong.client.submission import STATE_KEY
from doitong_emulator import DoitongEmulator, FaultConfig
from tests.faults.conftest import CLEAR_DAG_ID
from tests.support.airflow_cluster import AirflowCluster

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def _set(cluster: AirflowCluster, name: str, value: str) -> None:
    cluster.airflow("variables", "set", name, value)


def _try_number(cluster: AirflowCluster, run_id: str) -> int:
    rows = cluster.query(
        "select try_number from task_instance where run_id = ? and task_id = 'generate'", (run_id,)
    )
    return int(rows[0][0] or 0) if rows else 0


def _clear_and_wait(cluster: AirflowCluster, run_id: str) -> str:
    """Clear the run's one task (``tasks clear`` selects runs by logical date; a triggered run has none),
    then wait for its next try to finish (a fast try may be over before the CLI has exited)."""
    before = _try_number(cluster, run_id)
    cluster.airflow("dags", "clear", CLEAR_DAG_ID, "--run-id", run_id, "--yes")
    deadline = time.time() + 180
    while _try_number(cluster, run_id) <= before:
        assert time.time() < deadline, "the cleared task did not run again"
        time.sleep(0.5)
    return cluster.wait_for_run(run_id, timeout=180)


def _record(cluster: AirflowCluster, run_id: str) -> dict[str, object]:
    value = cluster.task_state_value(run_id, "generate", -1, STATE_KEY)
    assert value is not None
    return json.loads(value)


def _log(cluster: AirflowCluster, run_id: str, attempt: int) -> str:
    return cluster.attempt_log(CLEAR_DAG_ID, run_id, "generate", -1, attempt)


def test_a_cleared_task_submits_a_changed_prompt_once_and_reuses_an_unchanged_one(
    fault_cluster: AirflowCluster, fault_emulator: DoitongEmulator, tmp_path: Path
) -> None:
    emu = fault_emulator
    emu.reset()
    emu.set_faults(FaultConfig())
    output = tmp_path / "cleared"
    _set(fault_cluster, "doitong_clear_output", str(output))
    _set(fault_cluster, "doitong_clear_prompt", "a red kite over the dunes")
    run_id = fault_cluster.trigger(CLEAR_DAG_ID)
    assert fault_cluster.wait_for_run(run_id, timeout=180) == "success"
    first = _record(fault_cluster, run_id)
    assert first["state"] == "stored"
    assert {p.stem for p in output.iterdir()} == {first["job_id"]}

    # The templated prompt changes and the task is cleared: the new prompt, submitted once, a new file.
    _set(fault_cluster, "doitong_clear_prompt", "a blue kite over the dunes")
    assert _clear_and_wait(fault_cluster, run_id) == "success"
    second = _record(fault_cluster, run_id)
    log = _log(fault_cluster, run_id, 2)
    assert second["job_id"] != first["job_id"] and second["state"] == "stored", (second, log[-3000:])
    assert emu.stats()["submissions_by_prompt"] == {
        "a red kite over the dunes": 1,
        "a blue kite over the dunes": 1,
    }
    assert {p.stem for p in output.iterdir()} == {first["job_id"], second["job_id"]}
    assert "the request changed since job" in log and "Submitted Doitong job" in log, log[-3000:]

    # Cleared again with the same request, its file gone: the paid image is fetched again, no charge.
    (image,) = output.glob(f"{second['job_id']}.*")
    image.unlink()
    assert _clear_and_wait(fault_cluster, run_id) == "success"
    assert _record(fault_cluster, run_id)["job_id"] == second["job_id"]
    assert sum(emu.stats()["submissions_by_prompt"].values()) == 2
    assert image.exists()
    log = _log(fault_cluster, run_id, 3)
    assert "its image is reused at no new charge" in log and "Submitted Doitong job" not in log, log[-3000:]
