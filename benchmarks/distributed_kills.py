"""What the distributed run's failure scenarios do while a batch runs: SIGKILL a Celery worker or a triggerer.

Each function waits for its moment, kills, and returns what it saw (``at`` is the Unix time of the
kill). The mapped operator's run has many task instances and many waits; ``FluxBatchOperator``'s
has one task instance, and while it defers one wait (:class:`DoitongBatchTrigger`), so its kills
aim at the one process that runs it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from airflow_provider_doitong.client.contract import PLANS
from doitong_emulator import DoitongEmulator
from tests.support.airflow_cluster import unix_time
from tests.support.distributed_cluster import DistributedCluster

#: Seconds without a submission after which a sync batch is taken to be waiting for its jobs: its
#: last job id is in the ledger by then (one S3 write), so a kill cannot land between a POST and
#: the ledger's record of its answer (a kill there may charge an item twice, and the batch says so).
QUIET_AFTER_SUBMIT_S = 2.0
#: Seconds the killed worker stays down in the mapped scenario.
WORKER_DOWN_S = 5.0


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out waiting for {what}")


def emu_concurrency(emu: DoitongEmulator) -> int:
    return int(PLANS[emu.accounts[0].plan].concurrent_jobs)


def submitted(emu: DoitongEmulator) -> int:
    return sum(emu.stats()["submissions_by_prompt"].values())


def _task_groups(cluster: DistributedCluster, name: str) -> set[int]:
    """The process groups of a worker's processes other than its own: Airflow's task supervisor puts
    each task process in a group of its own (so it can signal the task's whole tree), which a
    signal to the worker's group does not reach."""
    import psutil

    proc = cluster.procs.get(name)
    if proc is None:
        return set()
    groups = set()
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    for child in family:
        try:
            groups.add(os.getpgid(child.pid))
        except ProcessLookupError:
            continue
    return groups - {proc.pid}


def kill_worker_host(cluster: DistributedCluster, name: str) -> int:
    """SIGKILL a Celery worker as if its machine were lost: its own process group, then each task's.

    Without the second step the tasks outlive their supervisor, orphaned, and go on calling the API
    until they fail to reach it. Returns how many task process groups were killed.
    """
    groups = _task_groups(cluster, name)
    cluster.kill(name, signal.SIGKILL)
    killed = 0
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            continue
    return killed


def _busy_worker(cluster: DistributedCluster) -> str | None:
    for name in cluster.worker_names:
        if cluster.worker_task_pids(name):
            return name
    return None


def kill_worker(cluster: DistributedCluster, emu: DoitongEmulator, prompts: list[str]) -> dict[str, Any]:
    """Once the second wave is being submitted, SIGKILL a worker that is running tasks; restart it 5 s later."""
    second_wave = min(len(prompts), emu_concurrency(emu) + 1)
    wait_until(lambda: submitted(emu) >= second_wave, 600, "the second wave's first submission")
    name = wait_until(lambda: _busy_worker(cluster), 600, "a worker running a task", step=0.05)
    running = len(cluster.worker_task_pids(name))
    task_groups = kill_worker_host(cluster, name)
    killed_at = time.time()
    time.sleep(WORKER_DOWN_S)
    cluster.start_component(name)
    return {
        "component": name,
        "at": killed_at,
        "tasks_running_when_killed": running,
        "task_groups_killed": task_groups,
    }


def _quiet_after(emu: DoitongEmulator, count: int) -> bool:
    """At least ``count`` jobs submitted, the last submission answered over QUIET_AFTER_SUBMIT_S ago."""
    submits = [e["t"] for e in emu.request_log() if e["kind"] == "submit"]
    return submitted(emu) >= count and bool(submits) and time.time() - max(submits) >= QUIET_AFTER_SUBMIT_S


def kill_worker_when_quiet(
    cluster: DistributedCluster, emu: DoitongEmulator, *, after: int, down_s: float = WORKER_DOWN_S
) -> dict[str, Any]:
    """Once ``after`` jobs are submitted and submissions are quiet, SIGKILL a worker running tasks.

    For runs of several DAGs where a sync ``FluxBatchOperator`` holds a worker slot while it waits:
    the quiet moment keeps the kill out of a POST's gap before the ledger records its answer (as in
    :func:`kill_batch_worker`). The worker starts again ``down_s`` later.
    """
    wait_until(lambda: _quiet_after(emu, after), 600, f"{after} submissions, then a quiet moment")
    name = wait_until(lambda: _busy_worker(cluster), 60, "a worker running a task", step=0.05)
    running = len(cluster.worker_task_pids(name))
    before = submitted(emu)
    task_groups = kill_worker_host(cluster, name)
    killed_at = time.time()
    time.sleep(down_s)
    cluster.start_component(name)
    return {
        "component": name,
        "at": killed_at,
        "tasks_running_when_killed": running,
        "task_groups_killed": task_groups,
        "submitted_when_killed": before,
    }


def kill_batch_worker(
    cluster: DistributedCluster, emu: DoitongEmulator, prompts: list[str], *, dag_id: str, run_id: str
) -> dict[str, Any]:
    """SIGKILL the worker running a sync ``FluxBatchOperator`` once half its waves are submitted.

    The killed worker stays down until the task's next try runs on the other worker (the scheduler
    fails the killed try after ``task_instance_heartbeat_timeout``), so the retry reads the ledger
    from S3 on another host, as it would after losing a machine; then the worker starts again.
    """
    size = emu_concurrency(emu)
    target = min(len(prompts), size * max(1, len(prompts) // size // 2))
    wait_until(lambda: _quiet_after(emu, target), 600, f"{target} submissions, then a quiet moment")
    name = wait_until(lambda: _busy_worker(cluster), 60, "the worker running the batch", step=0.05)
    before = submitted(emu)
    task_groups = kill_worker_host(cluster, name)
    killed_at = time.time()

    def next_try_elsewhere() -> str | None:
        rows = cluster.query(
            "select try_number, state from task_instance where dag_id = ? and run_id = ?", (dag_id, run_id)
        )
        if not rows or int(str(rows[0][0])) < 2 or rows[0][1] != "running":
            return None
        return _busy_worker(cluster)

    other = wait_until(next_try_elsewhere, 600, "the batch's next try on another worker", step=0.2)
    cluster.start_component(name)
    return {
        "component": name,
        "at": killed_at,
        "submitted_when_killed": before,
        "task_groups_killed": task_groups,
        "pending_when_killed": len(prompts) - before,
        "next_try_on": other,
        "next_try_after_s": round(time.time() - killed_at, 1),
    }


def _beat(beats: list[tuple[object, ...]], job_id: str) -> float:
    return next((unix_time(beat) or 0.0) for i, beat in beats if str(i) == job_id)


def kill_triggerer(
    cluster: DistributedCluster, emu: DoitongEmulator, prompts: list[str], *, timeout: float = 600
) -> dict[str, Any]:
    """When both triggerers hold waits, SIGKILL ``triggerer-1``; time until the other holds all its waits.

    :param timeout: seconds to wait for both triggerers to hold waits.

    Which triggerer job (the ``trigger.triggerer_id``) was killed is told by its heartbeat stopping.
    """

    def spread() -> dict[str, int] | None:
        held = cluster.triggers_by_triggerer()
        return held if len(held) >= len(cluster.triggerer_names) else None

    held = wait_until(spread, timeout, "waits on every triggerer", step=0.1)
    name = cluster.triggerer_names[0]
    cluster.kill(name, signal.SIGKILL)
    killed_at = time.time()

    time.sleep(5)  # the survivor heartbeats every second meanwhile; the killed one no more
    beats = cluster.query("select id, latest_heartbeat from job where job_type = 'TriggererJob'")
    dead = min((str(i) for i, _ in beats if str(i) in held), key=lambda i: _beat(beats, i))
    return {
        "component": name,
        "at": killed_at,
        "waits_held_by_killed": held[dead],
        "waits_held_by_others": sum(n for job_id, n in held.items() if job_id != dead),
        **_take_over(cluster, name, dead, killed_at),
    }


def _take_over(cluster: DistributedCluster, name: str, dead: str, killed_at: float) -> dict[str, Any]:
    """Wait until no wait is left on the killed triggerer job, then start the killed component again."""
    wait_until(
        lambda: cluster.triggers_by_triggerer().get(dead, 0) == 0,
        300,
        "the other triggerer to take over",
        step=0.2,
    )
    takeover_s = time.time() - killed_at
    cluster.start_component(name)
    return {"takeover_s": takeover_s}


def kill_batch_triggerer(
    cluster: DistributedCluster, emu: DoitongEmulator, prompts: list[str], *, dag_id: str, run_id: str
) -> dict[str, Any]:
    """SIGKILL the triggerer running a deferrable ``FluxBatchOperator``'s wait, once it has jobs running.

    The holder is found by pausing each triggerer in turn until the holding job's heartbeat stops
    (:meth:`DistributedCluster.triggerer_running`).
    """

    def holder() -> str | None:
        if not submitted(emu):
            return None
        held = cluster.triggers_by_triggerer()
        return next(iter(held), None) if len(held) == 1 else None

    job_id = wait_until(holder, 600, "the batch's wait in a triggerer", step=0.1)
    name = cluster.triggerer_running(job_id)
    if name is None:
        raise TimeoutError(f"no triggerer process answers for triggerer job {job_id}")
    waiting_on = len(cluster.query("select id from trigger where triggerer_id = ?", (int(job_id),)))
    cluster.kill(name, signal.SIGKILL)
    killed_at = time.time()
    time.sleep(3)  # the job the kill was aimed at heartbeats no more
    beat = cluster.query("select latest_heartbeat from job where id = ?", (int(job_id),))[0][0]
    return {
        "component": name,
        "at": killed_at,
        "holder_confirmed": (unix_time(beat) or 0.0) < killed_at,
        "waits_held_by_killed": waiting_on,
        "jobs_submitted_when_killed": submitted(emu),
        **_take_over(cluster, name, job_id, killed_at),
    }
