"""One emulator and one real Airflow (scheduler, triggerer, LocalExecutor) for the whole fault suite."""

from __future__ import annotations

import json
import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from doitong_emulator import DoitongEmulator
from doitong_emulator.pytest_plugin import EmulatorFactory
from tests.support.airflow_cluster import AirflowCluster, free_port

TIME_SCALE = 0.1
JOB_SECONDS = 60  # 6 s of real time each
POLL_INTERVAL = 0.5
STUCK_TIMEOUT_S = 20

DAG_TEMPLATE = textwrap.dedent(
    """
    from __future__ import annotations

    from datetime import timedelta

    import pendulum

    from airflow.sdk import DAG, task
    from airflow_provider_doitong.operators.flux import FluxGenerateOperator

    with DAG("%(dag_id)s", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False,
             max_active_tasks=64):

        @task
        def prompts(dag_run=None):
            return dag_run.conf["prompts"]

        FluxGenerateOperator.partial(
            task_id="generate", width=256, height=256, deferrable=%(deferrable)s, poll_interval=%(poll)r,
            timeout=%(timeout)r, output_path="{{ dag_run.conf['output'] }}/", pool="doitong",
            retries=%(retries)d, retry_delay=timedelta(seconds=1),
        ).expand(prompt=prompts())
    """
)

#: One task whose prompt and output folder come from Variables, to change them and clear the task.
CLEAR_DAG_ID = "doitong_faults_clear"
CLEAR_DAG = textwrap.dedent(
    """
    from __future__ import annotations

    import pendulum

    from airflow.sdk import DAG
    from airflow_provider_doitong.operators.flux import FluxGenerateOperator

    with DAG("%(dag_id)s", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False):
        FluxGenerateOperator(
            task_id="generate", width=256, height=256, deferrable=True, poll_interval=%(poll)r,
            prompt="{{ var.value.doitong_clear_prompt }}", output_path="{{ var.value.doitong_clear_output }}/",
        )
    """
)

#: dag_id -> (deferrable, retries, timeout). ``doitong_faults`` retries six times: a dropped submission
#: fails its try by design (a lost answer may have made a job; the next try resubmits), and at the
#: scenario's 20% drop rate four lost submissions in a row for one of five tasks are not rare enough.
DAGS = {
    "doitong_faults": (True, 6, 300.0),
    "doitong_faults_no_retry": (True, 0, float(STUCK_TIMEOUT_S)),
    "doitong_faults_in_worker": (False, 2, 300.0),
}


@pytest.fixture(scope="package")
def fault_emulator(doitong_emulators: EmulatorFactory) -> Iterator[DoitongEmulator]:
    # A port no outgoing connection can be given while the emulator is stopped (then started on it).
    with doitong_emulators(
        port=free_port(),
        plan="pro",
        time_scale=TIME_SCALE,
        job_seconds=JOB_SECONDS,
        credits=1_000_000,
        api_key=f"sk-fault-{secrets.token_hex(12)}",
        webhook_secret=f"whsec-fault-{secrets.token_hex(12)}",
    ) as emu:
        yield emu


@pytest.fixture(scope="package")
def fault_cluster(
    fault_emulator: DoitongEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AirflowCluster]:
    root = tmp_path_factory.mktemp("faults")
    dags = root / "dags"
    dags.mkdir()
    for dag_id, (deferrable, retries, timeout) in DAGS.items():
        (dags / f"{dag_id}.py").write_text(
            DAG_TEMPLATE
            % {
                "dag_id": dag_id,
                "deferrable": deferrable,
                "poll": POLL_INTERVAL,
                "timeout": timeout,
                "retries": retries,
            }
        )
    (dags / f"{CLEAR_DAG_ID}.py").write_text(CLEAR_DAG % {"dag_id": CLEAR_DAG_ID, "poll": POLL_INTERVAL})
    conn = {
        "conn_type": "doitong",
        "host": fault_emulator.base_url,
        "password": fault_emulator.api_key,
        "extra": {"webhook_secret": fault_emulator.webhook_secret},
    }
    env = {
        "AIRFLOW_CONN_DOITONG_DEFAULT": json.dumps(conn),
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
    }
    with AirflowCluster(home=root / "airflow", dags_folder=dags, env=env) as cluster:
        cluster.create_pool("doitong", 10)
        for dag_id in [*DAGS, CLEAR_DAG_ID]:
            cluster.wait_for_dag(dag_id)
        yield cluster


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    return tmp_path / "images"
