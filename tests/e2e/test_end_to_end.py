"""End to end: a real scheduler, triggerer and LocalExecutor, the emulator on the pro plan.

Twenty mapped prompts wait deferred; the triggerer is killed with SIGKILL mid-wait and started
again; every task still succeeds, each prompt is submitted exactly once, every file exists, and the
status requests stay far below one per task per poll.
"""

from __future__ import annotations

import json
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from doitong_emulator import DoitongEmulator
from tests.support.airflow_cluster import AirflowCluster

pytestmark = pytest.mark.e2e

PROMPTS = [f"an end-to-end image, number {n}" for n in range(20)]
POLL_INTERVAL = 1.0
TIME_SCALE = 0.25
JOB_SECONDS = 20  # 5 s of real time each

DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    import pendulum

    from airflow.sdk import DAG, task
    from airflow_provider_doitong.operators.flux import FluxGenerateOperator

    with DAG("doitong_e2e", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False,
             max_active_tasks=64):

        @task
        def prompts(dag_run=None):
            return dag_run.conf["prompts"]

        FluxGenerateOperator.partial(
            task_id="generate", width=256, height=256, deferrable=True, poll_interval=%(poll)s,
            output_path="{{ dag_run.conf['output'] }}/", pool="doitong", retries=2, retry_delay=1,
        ).expand(prompt=prompts())
    """
)


def test_batch_survives_a_triggerer_sigkill(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "doitong_e2e.py").write_text(DAG_FILE % {"poll": POLL_INTERVAL})
    output = tmp_path / "images"
    with DoitongEmulator(plan="pro", time_scale=TIME_SCALE, job_seconds=JOB_SECONDS, credits=100_000) as emu:
        conn = {"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key}
        env = {
            "AIRFLOW_CONN_DOITONG_DEFAULT": json.dumps(conn),
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
        }
        with AirflowCluster(home=tmp_path / "airflow", dags_folder=dags, env=env) as cluster:
            cluster.create_pool("doitong", 10)
            run_id = cluster.trigger("doitong_e2e", {"prompts": PROMPTS, "output": str(output)})
            _wait_until(lambda: cluster.count_state("generate", "deferred") >= 5, timeout=300)
            deferred_seen = cluster.count_state("generate", "deferred")
            cluster.kill("triggerer", signal.SIGKILL)
            time.sleep(2)
            cluster.start_component("triggerer")
            state = cluster.wait_for_run(run_id, timeout=600)
            states = cluster.task_states(run_id)
            logs = cluster.task_logs()
            seen = cluster.states_seen
        stats: dict[str, Any] = emu.stats()

    assert state == "success", states
    assert deferred_seen >= 5
    assert sum("deferred" in s for k, s in seen.items() if k.startswith("generate[")) == len(PROMPTS)
    assert stats["submissions_by_prompt"] == {p: 1 for p in PROMPTS}
    assert len(list(output.glob("*.jpg"))) == len(PROMPTS)
    # One poll per task per interval would be 20 tasks x 5 s / 1 s = 100 status requests at least.
    naive = len(PROMPTS) * (JOB_SECONDS * TIME_SCALE) / POLL_INTERVAL
    assert stats["requests"]["status"] < naive / 2, stats["requests"]
    assert emu.api_key not in logs


def _wait_until(predicate: Any, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise TimeoutError("condition not reached")
