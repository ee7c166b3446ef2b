"""The distributed run's scenarios of several runs at once: their pure parts (prompts, counts, DAG text),
and the worker kill on a real process tree."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from benchmarks.distributed import SCENARIO_TABLE, DistributedSettings
from benchmarks.distributed_dags import CACHE_ARGUMENT, with_cache
from benchmarks.distributed_kills import kill_worker_host
from benchmarks.distributed_together import killed_summary, makespan, side_prompts, submission_figures


def _submit(t: float, status: int = 200) -> dict[str, Any]:
    return {"t": t, "kind": "submit", "status": status}


def test_both_scenarios_are_in_the_table_and_run_together() -> None:
    assert SCENARIO_TABLE["shared_account"].together
    assert SCENARIO_TABLE["cache_concurrent"].together
    assert not SCENARIO_TABLE["batch"].together


def test_shared_account_prompts_are_distinct_across_the_three_dags() -> None:
    prompts = side_prompts("shared_account", DistributedSettings(shared_prompts=(5, 4, 3)))
    assert {side: len(p) for side, p in prompts.items()} == {"batch": 5, "batch_deferrable": 4, "mapped": 3}
    every = [p for side in prompts.values() for p in side]
    assert len(set(every)) == 12


def test_cache_concurrent_runs_ask_for_the_same_prompts() -> None:
    prompts = side_prompts("cache_concurrent", DistributedSettings(cache_prompts=7))
    assert list(prompts) == ["one", "two"]
    assert prompts["one"] == prompts["two"]
    assert len(set(prompts["one"])) == 7


def test_submission_figures_count_posts_jobs_and_jobs_beyond_one_a_prompt() -> None:
    log = [_submit(1.0), _submit(1.1, 429), _submit(1.2), {"t": 2.0, "kind": "status", "status": 200}]
    figures = submission_figures(log, {"a": 1, "b": 2, "c": 1})
    assert figures == {
        "posts": 3,
        "posts_accepted": 2,
        "jobs": 4,
        "distinct_prompts_submitted": 3,
        "duplicate_submissions": 1,
    }


def test_makespan_runs_from_the_first_accepted_submission_to_the_last_end() -> None:
    log = [_submit(9.0, 429), _submit(10.0), _submit(12.0)]
    assert makespan(log, [50.0, None, 70.5]) == pytest.approx(60.5)
    assert makespan(log, [None]) is None
    assert makespan([_submit(3.0, 429)], [10.0]) is None


def test_killed_summary_names_every_kill_and_what_was_missed() -> None:
    event = {
        "worker": {"component": "worker-2", "at": 105.0, "tasks_running_when_killed": 1},
        "triggerer": {"component": None, "at": 130.0, "missed": "timed out waiting for waits"},
    }
    summary = killed_summary(event, first_submission=100.0)
    assert summary["component"] == "worker-2"
    assert summary["missed"] == "triggerer: timed out waiting for waits"
    assert summary["worker"] == {
        "component": "worker-2",
        "tasks_running_when_killed": 1,
        "after_first_submission_s": 5.0,
    }
    assert summary["triggerer"]["after_first_submission_s"] == 30.0
    assert "missed" not in killed_summary({"worker": event["worker"]}, first_submission=100.0)


def test_with_cache_adds_the_cache_path_once_and_refuses_an_unknown_file() -> None:
    source = 'FluxBatchOperator(task_id="generate", doitong_conn_id="doitong_default")'
    assert with_cache(source) == (
        f'FluxBatchOperator(task_id="generate", {CACHE_ARGUMENT}doitong_conn_id="doitong_default")'
    )
    with pytest.raises(ValueError, match="connection"):
        with_cache('FluxBatchOperator(task_id="generate")')


class _Cluster:
    """The two members of ``DistributedCluster`` a worker kill uses, over a real process."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.procs = {"worker-1": proc}

    def kill(self, name: str, sig: int) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, sig)
        proc.wait(timeout=30)


@pytest.mark.integration
def test_a_worker_kill_reaches_the_tasks_in_process_groups_of_their_own(tmp_path: Path) -> None:
    """A "worker" whose child moves to its own process group, as Airflow's task supervisor does."""
    pid_file = tmp_path / "task.pid"
    task = f"import os, time; os.setpgid(0, 0); open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {task!r}]); time.sleep(120)",
        ],
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    task_pid = int(pid_file.read_text())
    try:
        assert kill_worker_host(_Cluster(worker), "worker-1") == 1  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while psutil.pid_exists(task_pid) and psutil.Process(task_pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the task outlived its worker"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(task_pid, signal.SIGKILL)
