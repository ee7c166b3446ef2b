"""The TaskFlow example in a real Airflow, started by hand through its REST API with no logical date.

A scheduler, dag-processor, triggerer and api-server (LocalExecutor) serve
``example_dags/doitong_taskflow.py``; the run is created with ``"logical_date": null``, as the UI's
trigger button and API clients may, and both decorated tasks wait in the triggerer.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_doitong.batch.manifest import verify_manifest
from airflow_provider_doitong.batch.stores import safe_component
from doitong_emulator import DoitongEmulator
from tests.examples._helpers import EXAMPLES
from tests.support.airflow_cluster import AirflowCluster

pytestmark = pytest.mark.e2e

DAG_ID = "doitong_taskflow"
SUBJECT = "a paper boat on a pond"
POSTER = f"A poster of {SUBJECT}, flat colours, bold shapes"
STYLES = ("watercolour", "woodcut print", "neon sign")


def _wait_for_run(api: httpx.Client, run_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        run.raise_for_status()
        if run.json()["state"] in ("success", "failed"):
            return dict(run.json())
        time.sleep(2)
    raise TimeoutError(f"run {run_id} did not finish in {timeout}s")


def test_the_example_runs_when_triggered_through_the_api_without_a_logical_date(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(EXAMPLES / f"{DAG_ID}.py", dags / f"{DAG_ID}.py")
    images = tmp_path / "images"
    with DoitongEmulator(plan="pro", time_scale=0.05, job_seconds=20, credits=100_000) as emu:
        env = {
            "AIRFLOW_CONN_DOITONG_DEFAULT": json.dumps(
                {"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key}
            ),
            "DOITONG_OUTPUT_ROOTS": str(images),
        }
        with (
            AirflowCluster(home=tmp_path / "airflow", dags_folder=dags, env=env) as cluster,
            httpx.Client(base_url=f"http://127.0.0.1:{cluster.port}", timeout=60) as api,
        ):
            cluster.wait_for_dag(DAG_ID)
            created = api.post(
                f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"subject": SUBJECT}}
            )
            assert created.status_code == 200, created.text
            assert created.json()["logical_date"] is None
            run_id = created.json()["dag_run_id"]
            run = _wait_for_run(api, run_id)
            states = cluster.task_states(run_id)
            seen = cluster.states_seen
            xcom = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{{}}/xcomEntries/return_value"
            poster = api.get(xcom.format("poster")).json()["value"]
            batch = api.get(xcom.format("variations")).json()["value"]
        stats = emu.stats()

    assert run["state"] == "success" and run["logical_date"] is None, states
    assert states == {"folder": "success", "poster": "success", "variations": "success"}
    assert "deferred" in seen["poster[-1]"]  # waited in the triggerer, resumed without the function
    folder = images / "taskflow" / safe_component(run_id)
    assert poster["prompt"] == POSTER and Path(poster["output_path"]).parent == folder / "poster"
    assert Path(poster["output_path"]).is_file()
    assert batch["stored"] == len(STYLES) and batch["folder"].rstrip("/") == str(folder / "variations")
    assert verify_manifest(batch["folder"]) == []
    manifest = json.loads(Path(batch["manifest"]).read_text())
    assert [item["prompt"] for item in manifest["items"]] == [f"{POSTER}, as a {s}" for s in STYLES]
    assert stats["submissions_by_prompt"] == {POSTER: 1, **{f"{POSTER}, as a {s}": 1 for s in STYLES}}
