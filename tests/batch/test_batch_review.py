"""``FluxBatchOperator(require_approval=True)`` left unanswered, in real Airflow.

When ``approval_timeout`` passes, Airflow answers with ``on_approval_timeout``: on 3.3 and later
the scheduler's timeout sweep does, on 3.1 and 3.2 the standard provider's ``HITLTrigger`` in the
triggerer. Both run here in a real Airflow (scheduler, triggerer, LocalExecutor). In ``dag.test()``
the 3.3 sweep runs beside it (``dag.test()`` has no scheduler); on 3.1 and 3.2 ``dag.test()`` cannot
run the trigger's wait, and the task refuses before its first credit. The answered cases are in
``tests/examples/test_review_and_publish.py`` and ``tests/e2e/test_examples_over_rest.py``.
"""

from __future__ import annotations

import json
import logging
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_doitong import _compat
from airflow_provider_doitong.batch.manifest import verify_manifest
from doitong_emulator import DoitongEmulator
from tests.batch.test_batch_operator import batch_dag
from tests.conftest import run_dag, task_states, xcom_value
from tests.support.airflow_cluster import AirflowCluster

# Airflow 3.0: the option is refused when built (tests/operators/test_review_options.py).
if _compat.HUMAN_REVIEW_UNAVAILABLE:
    pytest.skip(_compat.HUMAN_REVIEW_UNAVAILABLE, allow_module_level=True)

PROMPTS = ["a gull on a post", "a lantern in fog"]
DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    import pendulum

    from airflow.sdk import DAG
    from airflow_provider_doitong.operators.batch import FluxBatchOperator

    for on_timeout in ("approve", "reject"):
        with DAG(f"review_timeout_{on_timeout}", schedule=None, start_date=pendulum.datetime(2025, 1, 1)):
            FluxBatchOperator(
                task_id="batch", prompts="{{ dag_run.conf['prompts'] | tojson }}",
                output_path="{{ dag_run.conf['output'] }}", width=256, height=256, poll_interval=0.5,
                require_approval=True, approval_timeout=15, on_approval_timeout=on_timeout,
                retries=2, retry_delay=1,
            )
    """
)


class TimeoutSweep(threading.Thread):
    """The scheduler's own sweep of timed-out ``awaiting_input`` tasks, every half second (3.3+)."""

    def __init__(self) -> None:
        # Imported here, in the test's thread: importing Airflow's models from two threads at once
        # deadlocks on SQLAlchemy's mapper configuration.
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

        super().__init__(daemon=True)
        self.done = threading.Event()
        self.sweep = SchedulerJobRunner.check_awaiting_input_timeouts

    def run(self) -> None:
        scheduler = SimpleNamespace(log=logging.getLogger("timeout-sweep"))
        while not self.done.wait(0.5):
            self.sweep(scheduler)  # type: ignore[arg-type]


def check_review(folder: Path, on_timeout: str) -> dict[str, Any]:
    """The manifest says the timeout decided, as ``on_timeout`` asks; both images stayed."""
    review: dict[str, Any] = json.loads((folder / "manifest.json").read_text())["review"]
    assert review["decision"] == {"approve": "approved", "reject": "rejected"}[on_timeout]
    assert review["timed_out"] is True and review["by"] is None and review["at"]
    assert verify_manifest(str(folder)) == [] and len(list(folder.glob("*.jpg"))) == 2
    return review


@pytest.mark.skipif(not _compat.AWAITS_INPUT, reason="dag.test() cannot wait for a person on 3.1 and 3.2")
@pytest.mark.parametrize(("on_timeout", "state"), [("approve", "success"), ("reject", "failed")])
def test_an_unanswered_review_in_dag_test_takes_the_timeout_fallback(
    on_timeout: str, state: str, doitong_conn: Any, tmp_path: Path
) -> None:
    dag = batch_dag(
        f"review_timeout_{on_timeout}",
        prompts=PROMPTS,
        output_path=str(tmp_path / "out"),
        require_approval=True,
        approval_timeout=1,
        on_approval_timeout=on_timeout,
    )
    sweep = TimeoutSweep()
    sweep.start()
    try:
        run = run_dag(dag)
    finally:
        sweep.done.set()
    assert task_states(run) == {"batch": state}
    review = check_review(tmp_path / "out", on_timeout)
    assert doitong_conn.stats()["requests"]["submit"] == 2
    if state == "success":
        assert xcom_value(run, "batch")["review"] == review


def test_dag_test_refuses_a_review_it_cannot_wait_for_before_the_first_credit(
    doitong_conn: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 3.1 and 3.2 as they are; from 3.3 (where dag.test() can wait) as if the wait were a trigger."""
    monkeypatch.setattr(_compat.human, "AWAITS_INPUT", False)
    dag = batch_dag(
        "review_in_dag_test", prompts=PROMPTS, output_path=str(tmp_path / "out"), require_approval=True
    )
    run = run_dag(dag)
    assert task_states(run) == {"batch": "failed"}
    assert doitong_conn.stats()["requests"].get("submit", 0) == 0 and not (tmp_path / "out").exists()
    logged = "".join(capfd.readouterr())
    assert "AirflowFailException: require_approval=True: on Airflow 3." in logged
    assert "dag.test() and 'airflow tasks test' run the review's wait" in logged


@pytest.fixture(scope="module")
def airflow(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AirflowCluster, DoitongEmulator, Path]]:
    root = tmp_path_factory.mktemp("review-timeout")
    dags = root / "dags"
    dags.mkdir()
    (dags / "review_timeout.py").write_text(DAG_FILE)
    with DoitongEmulator(plan="pro", time_scale=0.05, job_seconds=20, credits=100_000) as emu:
        conn = {"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key}
        env = {
            "AIRFLOW_CONN_DOITONG_DEFAULT": json.dumps(conn),
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "1",  # 3.3's awaiting_input sweep
        }
        with AirflowCluster(home=root / "airflow", dags_folder=dags, env=env) as cluster:
            yield cluster, emu, root


def batch_state(cluster: AirflowCluster, run_id: str) -> str | None:
    """The state of a run's one task (asked by name and run only: Airflow 3.4 renames map_index)."""
    rows = cluster.query("select state from task_instance where run_id = ? and task_id = 'batch'", (run_id,))
    return str(rows[0][0]) if rows else None


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_an_unanswered_review_in_airflow_takes_the_timeout_fallback(
    airflow: tuple[AirflowCluster, DoitongEmulator, Path],
) -> None:
    """Both fallbacks, in one real Airflow: the wait defers (3.1, 3.2) or awaits input (3.3+)."""
    cluster, emu, root = airflow
    runs = {
        on_timeout: cluster.trigger(
            f"review_timeout_{on_timeout}", {"prompts": PROMPTS, "output": str(root / on_timeout)}
        )
        for on_timeout in ("approve", "reject")
    }
    # The wait lasts approval_timeout (15 s) from the request: seen in Airflow's state as a rule; on a
    # machine loaded enough to miss it, the manifest's ``timed_out`` (check_review) still shows it.
    waiting = "awaiting_input" if _compat.AWAITS_INPUT else "deferred"
    seen: set[str] = set()
    ended: set[str] = set()
    deadline = time.monotonic() + 300
    while len(seen | ended) < len(runs) and time.monotonic() < deadline:
        states = {kind: batch_state(cluster, run_id) for kind, run_id in runs.items()}
        seen |= {kind for kind, state in states.items() if state == waiting}
        ended |= {kind for kind, state in states.items() if state in ("success", "failed")}
        time.sleep(0.2)
    assert seen | ended == set(runs), {kind: batch_state(cluster, run_id) for kind, run_id in runs.items()}
    for on_timeout, run_id in runs.items():
        state = cluster.wait_for_run(run_id, timeout=300)
        assert state == {"approve": "success", "reject": "failed"}[on_timeout], batch_state(cluster, run_id)
        check_review(root / on_timeout, on_timeout)
    assert emu.stats()["submissions_by_prompt"] == {prompt: 2 for prompt in PROMPTS}  # once per run
    assert emu.api_key not in cluster.task_logs()
