"""The batch under faults: each scenario is one DAG run of five prompts on the package's one Airflow.

Every scenario must end with each task in the state it should be in, no image paid for twice, every
completed image stored, and neither the API key nor the webhook secret in any log.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.client.submission import STATE_KEY
from doitong_emulator import DoitongEmulator, FaultConfig
from tests.faults.scenario import (
    assert_all_succeeded,
    assert_each_prompt_submitted_once,
    assert_invariants,
    run_scenario,
    seed_with,
    wait_until,
)
from tests.support.airflow_cluster import AirflowCluster, unix_time

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

PROMPTS = 5

NETWORK_FAULTS = {
    "http_500": FaultConfig(error_500_rate=0.25, seed=5),
    "rate_limit_storm": FaultConfig(error_429_rate=0.5, seed=6),
    "dropped_connections": FaultConfig(drop_rate=0.2, seed=7),
    "slow_answers": FaultConfig(latency_s=1.5, seed=8),
}


@pytest.mark.parametrize("name", list(NETWORK_FAULTS))
def test_network_fault(
    name: str, fault_cluster: AirflowCluster, fault_emulator: DoitongEmulator, output_dir: Path
) -> None:
    outcome = run_scenario(
        fault_cluster,
        fault_emulator,
        name=name,
        dag_id="doitong_faults",
        output=output_dir,
        faults=NETWORK_FAULTS[name],
        prompts=PROMPTS,
    )
    assert_invariants(outcome, fault_emulator)
    assert_all_succeeded(outcome)
    assert_each_prompt_submitted_once(outcome)
    injected = outcome.stats["http_5xx"] + outcome.stats["http_429"] + outcome.stats["dropped"]
    if name != "slow_answers":
        assert injected > 0, f"the fault was never injected: {outcome.stats}"
    if name in ("rate_limit_storm", "slow_answers"):
        retried = {i: ti["try_number"] for i, ti in outcome.tis.items() if int(ti["try_number"]) > 1}
        assert not retried, f"task attempts failed under {name}: {retried}"


def test_failed_jobs_fail_their_tasks_with_the_reason(
    fault_cluster: AirflowCluster, fault_emulator: DoitongEmulator, output_dir: Path
) -> None:
    seed = seed_with(0.5, hits=2, draws=PROMPTS)
    outcome = run_scenario(
        fault_cluster,
        fault_emulator,
        name="failed_jobs",
        dag_id="doitong_faults_no_retry",
        output=output_dir,
        faults=FaultConfig(fail_job_rate=0.5, seed=seed),
        prompts=PROMPTS,
    )
    assert_invariants(outcome, fault_emulator)
    assert_each_prompt_submitted_once(outcome)
    assert outcome.state == "failed"
    assert outcome.states() == {"success": PROMPTS - 2, "failed": 2}, outcome.states()
    for i, ti in outcome.tis.items():
        (job,) = outcome.jobs_of(outcome.prompts[i])
        if ti["state"] == "failed":
            assert job["status"] == "failed"
            log = outcome.ti_log(i)
            assert f"Doitong job {job['id']} failed" in log, log[-2000:]
            assert "The model failed to generate an image" in log, log[-2000:]
        else:
            assert job["status"] == "completed"


def test_stuck_jobs_fail_at_the_deadline(
    fault_cluster: AirflowCluster, fault_emulator: DoitongEmulator, output_dir: Path
) -> None:
    seed = seed_with(0.4, hits=2, draws=PROMPTS)
    outcome = run_scenario(
        fault_cluster,
        fault_emulator,
        name="stuck_jobs",
        dag_id="doitong_faults_no_retry",
        output=output_dir,
        faults=FaultConfig(stuck_job_rate=0.4, seed=seed),
        prompts=PROMPTS,
    )
    assert_invariants(outcome, fault_emulator)
    assert_each_prompt_submitted_once(outcome)
    assert outcome.states() == {"success": PROMPTS - 2, "failed": 2}, outcome.states()
    for i, ti in outcome.tis.items():
        (job,) = outcome.jobs_of(outcome.prompts[i])
        if ti["state"] == "failed":
            assert job["status"] == "processing"
            log = outcome.ti_log(i)
            assert f"Doitong job {job['id']} did not finish by its deadline" in log, log[-2000:]


def _when_deferred(cluster: AirflowCluster, run_id: str, count: int, *, or_done: bool = False) -> None:
    """Wait until ``count`` mapped tasks are deferred; with ``or_done``, until one is deferred and
    ``count`` are deferred or ended (on a loaded machine the first may end before the third defers)."""

    def deferred() -> bool:
        states = [state for key, state in cluster.task_states(run_id).items() if key.startswith("generate[")]
        waiting = states.count("deferred")
        if or_done:
            return waiting >= 1 and waiting + states.count("success") >= count
        return waiting >= count

    wait_until(deferred, timeout=120, what=f"{count} deferred tasks")


def test_emulator_restart_mid_batch(
    fault_cluster: AirflowCluster, fault_emulator: DoitongEmulator, output_dir: Path
) -> None:
    def restart(run_id: str, prompts: list[str]) -> None:
        _when_deferred(fault_cluster, run_id, 3, or_done=True)
        fault_emulator.restart()

    outcome = run_scenario(
        fault_cluster,
        fault_emulator,
        name="emulator_restart",
        dag_id="doitong_faults",
        output=output_dir,
        during=restart,
        prompts=PROMPTS,
    )
    assert_invariants(outcome, fault_emulator)
    assert_all_succeeded(outcome)
    assert_each_prompt_submitted_once(outcome)


def test_triggerer_sigkill_mid_batch(
    fault_cluster: AirflowCluster, fault_emulator: DoitongEmulator, output_dir: Path
) -> None:
    def kill_triggerer(run_id: str, prompts: list[str]) -> None:
        _when_deferred(fault_cluster, run_id, 3, or_done=True)
        fault_cluster.kill("triggerer", signal.SIGKILL)
        time.sleep(2)
        fault_cluster.start_component("triggerer")

    outcome = run_scenario(
        fault_cluster,
        fault_emulator,
        name="triggerer_sigkill",
        dag_id="doitong_faults",
        output=output_dir,
        during=kill_triggerer,
        prompts=PROMPTS,
    )
    assert_invariants(outcome, fault_emulator)
    assert_all_succeeded(outcome)
    assert_each_prompt_submitted_once(outcome)


def test_worker_sigkill_after_submission_reattaches(
    fault_cluster: AirflowCluster, fault_emulator: DoitongEmulator, output_dir: Path
) -> None:
    def kill_worker(run_id: str, prompts: list[str]) -> dict[str, Any]:
        submitted = wait_until(
            lambda: fault_emulator.stats()["submissions_by_prompt"], timeout=120, what="a submission"
        )
        prompt = next(iter(submitted))
        index = prompts.index(prompt)
        stored = wait_until(
            lambda: _recorded_job(fault_cluster.task_state_value(run_id, "generate", index, STATE_KEY)),
            timeout=15,
            what="the job id in the task state store",
        )
        (updated,) = fault_cluster.query(
            "select updated_at from task_state_store where run_id = ? and task_id = 'generate' "
            "and map_index = ? and key = ?",
            (run_id, index, STATE_KEY),
        )[0]
        (pid,) = wait_until(
            lambda: fault_cluster.task_pids(run_id, "generate", index), timeout=10, what="the task's process"
        )
        os.kill(pid, signal.SIGKILL)
        return {"index": index, "prompt": prompt, "stored": stored, "updated": updated, "pid": pid}

    outcome = run_scenario(
        fault_cluster,
        fault_emulator,
        name="worker_sigkill",
        dag_id="doitong_faults_in_worker",
        output=output_dir,
        during=kill_worker,
        prompts=PROMPTS,
    )
    assert_invariants(outcome, fault_emulator)
    assert_all_succeeded(outcome)
    assert_each_prompt_submitted_once(outcome)
    killed = outcome.during
    ti = outcome.tis[killed["index"]]
    assert int(ti["try_number"]) == 2, ti
    (job,) = outcome.jobs_of(killed["prompt"])
    assert killed["stored"] == job["id"]
    with fault_emulator.state.lock:
        created = fault_emulator.state.jobs[job["id"]].created_at
    stored_after = unix_time(killed["updated"]) - created
    print(f"[worker_sigkill] job id stored {stored_after * 1000:.0f} ms after the emulator created the job")
    assert 0 <= stored_after < 5
    retry_log = outcome.ti_log(killed["index"], attempt=2)
    assert f"Found Doitong job {job['id']} from an earlier try" in retry_log, retry_log[-2000:]
    assert "Submitted Doitong job" not in retry_log


def _recorded_job(value: str | None) -> str | None:
    """The job id in a task's submission record (raw, as the state store table holds it)."""
    record = json.loads(value) if value else None
    return record.get("job_id") if isinstance(record, dict) else None


OUTAGE_S = 25


@pytest.mark.parametrize(
    ("dag_id", "how"),
    [("doitong_faults", "refused"), ("doitong_faults_in_worker", "503-or-dropped")],
    ids=["deferrable-refused", "in-worker-503-or-dropped"],
)
def test_api_outage_while_waiting(
    fault_cluster: AirflowCluster, fault_emulator: DoitongEmulator, output_dir: Path, dag_id: str, how: str
) -> None:
    """A 25 s outage while every task waits: no task fails, no image is submitted twice.

    ``refused``: the emulator is stopped (connections refused) while the tasks wait in the triggerer.
    ``503-or-dropped``: its outage window answers 503 or drops every API request while the tasks
    wait in their workers.
    """
    seen: dict[str, Any] = {}

    def outage(run_id: str, prompts: list[str]) -> None:
        if how == "refused":
            _when_deferred(fault_cluster, run_id, PROMPTS)
            seen["start"] = time.time()
            fault_emulator.stop()
            try:
                time.sleep(OUTAGE_S)
            finally:
                fault_emulator.start()
        else:
            wait_until(
                lambda: len(fault_emulator.stats()["submissions_by_prompt"]) == PROMPTS,
                timeout=120,
                what="every submission",
            )
            seen["start"] = time.time()
            fault_emulator.set_faults(FaultConfig(outage_s=OUTAGE_S, outage_drop_rate=0.5, seed=9))
            time.sleep(OUTAGE_S)
        with fault_emulator.state.lock:
            jobs = list(fault_emulator.state.jobs.values())
        seen["jobs_done_during_outage"] = sum(1 for j in jobs if j.status(time.time()).is_terminal)

    outcome = run_scenario(
        fault_cluster,
        fault_emulator,
        name=f"api_outage_{how}",
        dag_id=dag_id,
        output=output_dir,
        during=outage,
        prompts=PROMPTS,
    )
    assert_invariants(outcome, fault_emulator)
    assert_each_prompt_submitted_once(outcome)
    assert_all_succeeded(outcome)
    tries = {i: int(ti["try_number"]) for i, ti in outcome.tis.items()}
    assert set(tries.values()) == {1}, f"a try failed during the outage: {tries}"
    assert seen["jobs_done_during_outage"] == PROMPTS  # the jobs finished while the API was away
    if how != "refused":
        assert outcome.stats["http_5xx"] + outcome.stats["dropped"] > 0, outcome.stats
