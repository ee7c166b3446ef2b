"""``FluxBatchOperator`` end to end: a real scheduler, triggerer and LocalExecutor, the emulator on the pro plan.

One Airflow for two runs of 20 prompts. Sync mode: the task's process is SIGKILLed while the first
wave of jobs runs; the retry reads the ledger, submits nothing again, and finishes. Deferrable mode:
the triggerer is SIGKILLed while the batch is deferred and started again. Both end with one
submission per prompt, every image stored and listed in the manifest with a matching SHA-256.
"""

from __future__ import annotations

import json
import os
import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.batch.manifest import verify_manifest
from doitong_emulator import DoitongEmulator
from tests.support.airflow_cluster import AirflowCluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

PROMPTS = [f"a batch end-to-end image, number {n}" for n in range(20)]
TIME_SCALE = 0.25
#: 25-s jobs: a deferral lasts well past the executor's report of the deferring process's exit (the
#: resume lead is ~7 s), so Airflow's resume race stays rare even on a loaded machine
JOB_SECONDS = 100

DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    import pendulum

    from airflow.sdk import DAG
    from airflow_provider_doitong.operators.batch import FluxBatchOperator

    for dag_id, deferrable in (("doitong_batch_sync", False), ("doitong_batch_deferrable", True)):
        with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False):
            FluxBatchOperator(
                task_id="batch", prompts="{{ dag_run.conf['prompts'] | tojson }}",
                output_path="{{ dag_run.conf['output'] }}", width=256, height=256, deferrable=deferrable,
                poll_interval=2.0, min_defer_seconds=2.0, retries=4, retry_delay=1,
            )
    """
)


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def check(emu: DoitongEmulator, output: Path, cluster: AirflowCluster, run_id: str) -> dict[str, Any]:
    state = cluster.wait_for_run(run_id, timeout=300)
    assert state == "success", cluster.task_states(run_id)
    assert emu.stats()["submissions_by_prompt"] == {p: 1 for p in PROMPTS}
    manifest = json.loads((output / "manifest.json").read_text())
    assert [e["prompt"] for e in manifest["items"]] == PROMPTS
    assert manifest["image_count"] == len(PROMPTS) and verify_manifest(str(output)) == []
    assert sorted(p.name for p in output.glob("*.jpg")) == sorted(e["file"] for e in manifest["items"])
    assert emu.api_key not in cluster.task_logs()
    return manifest


@pytest.fixture(scope="module")
def batch_cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("batch-e2e")
    dags = root / "dags"
    dags.mkdir()
    (dags / "doitong_batch_e2e.py").write_text(DAG_FILE)
    with DoitongEmulator(plan="pro", time_scale=TIME_SCALE, job_seconds=JOB_SECONDS, credits=100_000) as emu:
        conn = {"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key}
        env = {
            "AIRFLOW_CONN_DOITONG_DEFAULT": json.dumps(conn),
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
        }
        with AirflowCluster(home=root / "airflow", dags_folder=dags, env=env) as cluster:
            yield cluster, emu, root


def test_sync_batch_survives_a_worker_sigkill(batch_cluster: Any) -> None:
    cluster, emu, root = batch_cluster
    emu.reset()
    output = root / "sync"
    run_id = cluster.trigger("doitong_batch_sync", {"prompts": PROMPTS, "output": str(output)})
    # the first wave is submitted and recorded; its jobs run for 25 s: kill the task's process now
    wait_until(lambda: emu.stats()["requests"]["submit"] >= 10, timeout=180, what="the first wave")
    time.sleep(0.5)
    (pid,) = wait_until(lambda: cluster.task_pids(run_id, "batch"), timeout=10, what="the task's process")
    os.kill(pid, signal.SIGKILL)
    check(emu, output, cluster, run_id)
    (ti,) = cluster.task_instances(run_id)
    assert int(ti["try_number"]) == 2, ti
    retry_log = cluster.attempt_log("doitong_batch_sync", run_id, "batch", -1, 2)
    assert "Picking up the batch from its ledger" in retry_log, retry_log[-3000:]
    assert "Submitted item 1/" not in retry_log  # the first wave was found, not sent again


def test_deferrable_batch_survives_a_triggerer_sigkill(batch_cluster: Any) -> None:
    cluster, emu, root = batch_cluster
    emu.reset()
    output = root / "deferrable"
    run_id = cluster.trigger("doitong_batch_deferrable", {"prompts": PROMPTS, "output": str(output)})
    wait_until(lambda: cluster.task_states(run_id).get("batch") == "deferred", timeout=180, what="a deferral")
    cluster.kill("triggerer", signal.SIGKILL)
    time.sleep(2)
    cluster.start_component("triggerer")
    check(emu, output, cluster, run_id)  # every item submitted once, every image stored
    (ti,) = cluster.task_instances(run_id)
    tries = int(ti["try_number"])
    # The triggerer's death costs no try. Airflow's own race can: on a loaded machine the trigger fires
    # (and the task is scheduled, queued or even running again) before the executor has reported the
    # deferring process's exit, and the scheduler then fails that try as "changed externally". Each try
    # but the last must have been failed that way, by name, for this run; the ledger carries the batch
    # over, as check() shows.
    assert tries - 1 <= len(state_mismatches(cluster, run_id)), ti
    logs = "\n".join(
        cluster.attempt_log("doitong_batch_deferrable", run_id, "batch", -1, n) for n in range(1, tries + 1)
    )
    assert "Deferring with" in logs and "Resumed" in logs


def state_mismatches(cluster: AirflowCluster, run_id: str) -> list[str]:
    """The scheduler's lines that failed a try of ``run_id`` because its state changed under the executor."""
    lines = (cluster.home / "scheduler.log").read_text(errors="replace").splitlines()
    return [line for line in lines if run_id in line and "but the task instance's state attribute is" in line]
