"""The batch benchmark's ``FluxBatchOperator`` sides, what every side's Airflow costs, and the scale runs.

Figures every side gets: ``task_starts`` (task processes started: first starts, resumes after a
deferral and retries, counted from the task logs), ``airflow_cpu_s`` and ``airflow_cpu_s_per_image``
(CPU of every Airflow process during the run: scheduler with its executor workers and task
processes, triggerer, dag-processor, api-server). The batch sides also get ``failed_items`` and
``resumes`` from their manifest and logs.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_provider_doitong.batch.manifest import verify_manifest
from tests.support.airflow_cluster import AirflowCluster

START_MARKER = "::group::Pre Execute"


def airflow_cpu_seconds(cluster: AirflowCluster) -> dict[str, float]:
    """CPU seconds used so far by each Airflow component's processes (exited children included).

    Each live process counts its own time and the time of the children it has reaped, so a task
    process that ended is counted once, in its parent (the scheduler's executor workers).
    """
    import psutil

    used: dict[str, float] = {}
    for name in list(cluster.procs):
        total = 0.0
        for pid in cluster.component_pids(name):
            try:
                cpu = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += cpu.user + cpu.system + cpu.children_user + cpu.children_system
        used[name] = total
    return used


def task_starts(cluster: AirflowCluster, dag_id: str, run_id: str, tis: list[dict[str, Any]]) -> int:
    """Task processes started for a run: every start, resume and retry logs one ``Pre Execute``."""
    count = 0
    for ti in tis:
        for attempt in range(1, int(ti["try_number"] or 0) + 1):
            text = cluster.attempt_log(dag_id, run_id, str(ti["task_id"]), int(ti["map_index"]), attempt)
            count += text.count(START_MARKER)
    return count


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "p95": ordered[int(0.95 * (len(ordered) - 1))],
        "max": ordered[-1],
    }


def batch_figures(
    *,
    emu: Any,
    output: Path,
    prompts: list[str],
    first_submit: float | None,
    task_end: float | None,
    concurrency: int,
) -> dict[str, Any]:
    """What a ``FluxBatchOperator`` run left: files checked against its manifest and the emulator's jobs."""
    manifest_path = output / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"items": []}
    problems = verify_manifest(str(output)) if manifest_path.exists() else ["no manifest"]
    with emu.state.lock:
        jobs = {job.id: job for job in emu.state.jobs.values()}
    stored = {
        entry["prompt"]
        for entry in manifest["items"]
        if entry.get("status") == "stored"
        and entry.get("job_id") in jobs
        and jobs[entry["job_id"]].outcome == "completed"
        and (output / str(entry.get("file"))).is_file()
    }
    to_stored = [
        (output / entry["file"]).stat().st_mtime - jobs[entry["job_id"]].finish_at
        for entry in manifest["items"]
        if entry.get("status") == "stored"
        and entry.get("job_id") in jobs
        and (output / entry["file"]).is_file()
    ]
    completed = [j for j in jobs.values() if j.finish_at is not None and j.outcome == "completed"]
    idle = None
    if first_submit is not None and task_end is not None:
        busy = sum(min(j.finish_at, task_end) - j.created_at for j in completed)
        idle = (concurrency * (task_end - first_submit) - busy) / max(len(prompts), 1)
    return {
        "missing_files": len(set(prompts) - stored),
        "failed_items": int(manifest.get("failed_count") or 0),
        "manifest_problems": problems,
        "manifest_items": len(manifest["items"]),
        "phases_s": {"completion_to_stored": _summary(to_stored), "slot_idle_per_job": idle},
    }


def resumes(cluster: AirflowCluster, dag_id: str, run_id: str, tis: list[dict[str, Any]]) -> int:
    """Resumes after a deferral, from the batch task's logs."""
    total = 0
    for ti in tis:
        for attempt in range(1, int(ti["try_number"] or 0) + 1):
            total += cluster.attempt_log(dag_id, run_id, str(ti["task_id"]), -1, attempt).count("Resumed ")
    return total


def mapped_over_the_limit(
    cluster: AirflowCluster, dag_id: str, prompts: list[str], output: Path
) -> dict[str, Any]:
    """The mapped form given more prompts than ``[core] max_map_length``: how its run ends."""
    started = time.time()
    run_id = cluster.trigger(dag_id, {"prompts": prompts, "output": str(output)})
    state = cluster.wait_for_run(run_id, timeout=600)
    tis = cluster.task_instances(run_id)
    generate = [ti for ti in tis if ti["task_id"] == "generate"]
    reason = ""
    for ti in tis:
        if ti["state"] != "failed":
            continue
        attempt = max(1, int(ti["try_number"] or 1))
        log = cluster.attempt_log(dag_id, run_id, str(ti["task_id"]), int(ti["map_index"]), attempt)
        lines = [
            line for line in log.splitlines() if re.search(r"max_map_length|unmappable|1024", line, re.I)
        ]
        if lines:
            reason = f"task `{ti['task_id']}` failed: {_event(lines[-1])}"
            break
    return {
        "prompts": len(prompts),
        "run_state": state,
        "seconds": time.time() - started,
        "generate_states": sorted({str(ti["state"]) for ti in generate}),
        "reason": reason[:300],
    }


def _event(line: str) -> str:
    """The message of a JSON task-log line (or the line itself)."""
    try:
        record = json.loads(line)
    except ValueError:
        return line.strip()[:300]
    parts = [str(record.get("event", ""))]
    if record.get("error_detail"):
        detail = (
            record["error_detail"][0] if isinstance(record["error_detail"], list) else record["error_detail"]
        )
        parts.append(f"{detail.get('exc_type', '')}: {detail.get('exc_value', '')}")
    return " ".join(p for p in parts if p)[:300]


def run_and_measure(
    cluster: AirflowCluster,
    *,
    dag_id: str,
    conf: dict[str, Any],
    timeout: float,
    say: Callable[[str], None],
) -> tuple[str, str, float, dict[str, float]]:
    """Trigger a run and wait for it: its id, final state, wall seconds and Airflow CPU seconds by component."""
    before = airflow_cpu_seconds(cluster)
    started = time.time()
    run_id = cluster.trigger(dag_id, conf)
    state = cluster.wait_for_run(run_id, timeout=timeout)
    time.sleep(1)
    after = airflow_cpu_seconds(cluster)
    cpu = {name: round(after.get(name, 0.0) - before.get(name, 0.0), 2) for name in after}
    say(
        f"batch/{dag_id}: {state} in {time.time() - started:.0f}s, Airflow CPU {sum(cpu.values()):.1f}s {cpu}"
    )
    return run_id, state, time.time() - started, cpu
