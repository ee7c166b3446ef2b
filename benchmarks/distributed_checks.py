"""What one distributed scenario left behind, from the emulator, the metadata database, S3 and the logs."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from benchmarks.batch import failed_by_429, lower_bound
from benchmarks.distributed_dags import BUCKET, MANIFEST
from doitong_emulator import DoitongEmulator
from tests.support.distributed_cluster import DistributedCluster
from tests.support.services import S3Server

FINAL_FAILED = ("failed", "upstream_failed")


def budget(log: list[dict[str, Any]], *, window_s: float, limit: int) -> dict[str, Any]:
    """The plan's request budget as the account used it.

    Every request but downloads counts against the account's window ([A] in the contract), whichever
    process sent it. ``peak_in_fixed_window`` is what the server counted in its busiest window;
    ``peak_requests_in_a_window`` slides a window of the plan's length over the log (it can exceed
    the limit by straddling two windows).
    """
    times = sorted((e["t"], e["kind"]) for e in log if e["kind"] != "download")
    peak, peak_at, start = 0, None, 0
    for end in range(len(times)):
        while times[end][0] - times[start][0] >= window_s:
            start += 1
        if end - start + 1 > peak:
            peak, peak_at = end - start + 1, start
    by_kind: Counter[str] = Counter()
    if peak_at is not None:
        by_kind.update(kind for _, kind in times[peak_at : peak_at + peak])
    refused = Counter(e["kind"] for e in log if e["status"] == 429)
    fixed = fixed_windows([t for t, _ in times], window_s)
    return {
        "limit_per_window": limit,
        "window_s": window_s,
        "peak_in_fixed_window": max(fixed, default=0),
        "fixed_windows": fixed,
        "peak_requests_in_a_window": peak,
        "peak_share_of_limit": peak / limit if limit else None,
        "peak_window_by_kind": dict(by_kind),
        "http_429_by_kind": dict(refused),
    }


def fixed_windows(times: list[float], window_s: float) -> list[int]:
    """Requests per window as the emulator counts them: a window opens at the first request after the
    previous one ended and lasts ``window_s``."""
    counts: list[int] = []
    end = None
    for t in sorted(times):
        if end is None or t >= end:
            end = t + window_s
            counts.append(0)
        counts[-1] += 1
    return counts


def bucket_check(s3: S3Server, prefix: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Every completed job's image under ``prefix``, and a manifest naming exactly those images."""
    objects = s3.objects(BUCKET, prefix + "/")
    keys = set(objects)
    images = {key.rsplit("/", 1)[-1].split(".", 1)[0] for key in keys if not key.endswith(MANIFEST)}
    manifest_key = f"{prefix}/{MANIFEST}"
    manifest: dict[str, Any] | None = None
    if manifest_key in keys:
        manifest = json.loads(s3.read(BUCKET, manifest_key))
    listed = {e["job_id"]: e for e in (manifest or {}).get("images", ())}
    completed = {j["id"]: j for j in jobs if j["status"] == "completed"}
    missing_in_bucket = sorted(set(completed) - images)
    missing_in_manifest = sorted(set(completed) - set(listed))
    empty = sorted(k for k, size in objects.items() if size == 0)
    wrong_paths = sorted(
        job_id
        for job_id, entry in listed.items()
        if f"{prefix}/{job_id}." not in str(entry.get("output_path") or "")
    )
    return {
        "objects": len(objects),
        "images_in_bucket": len(images),
        "manifest": manifest is not None,
        "manifest_entries": len(listed),
        "missing_in_bucket": missing_in_bucket,
        "missing_in_manifest": missing_in_manifest,
        "manifest_paths_wrong": wrong_paths,
        "empty_objects": empty,
    }


def secrets_in_logs(
    cluster: DistributedCluster, secrets: dict[str, str]
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Which log files (task, trigger, worker, triggerer, scheduler, ...) contain which secret, and
    how many files and bytes were read (so an empty answer is not an empty search)."""
    found: dict[str, list[str]] = {}
    scanned = {"files": 0, "bytes": 0}
    for path in sorted(cluster.home.rglob("*.log")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        scanned["files"] += 1
        scanned["bytes"] += len(text)
        for name, secret in secrets.items():
            if secret and secret in text:
                found.setdefault(name, []).append(str(path.relative_to(cluster.home)))
    return found, scanned


def emulator_jobs(emu: DoitongEmulator) -> list[dict[str, Any]]:
    with emu.state.lock:
        return [
            {"id": j.id, "prompt": j.prompt, "status": j.outcome or "processing", "created": j.created_at}
            for j in emu.state.jobs.values()
        ]


def collect(
    *,
    name: str,
    dag_id: str,
    run_id: str,
    run_state: str,
    prompts: list[str],
    prefix: str,
    settings: Any,
    emu: DoitongEmulator,
    cluster: DistributedCluster,
    s3: S3Server,
) -> dict[str, Any]:
    """Every figure and check of one scenario."""
    stats = emu.stats()
    log = emu.request_log()
    jobs = emulator_jobs(emu)
    tis = cluster.task_instances(run_id)
    generate = [ti for ti in tis if ti["task_id"] == "generate"]
    failed = [ti for ti in tis if ti["state"] in FINAL_FAILED]
    unfinished = [ti for ti in tis if ti["state"] not in ("success", *FINAL_FAILED)]
    by_prompt: Counter[str] = Counter(stats["submissions_by_prompt"])
    storage = bucket_check(s3, prefix, jobs)
    stored = {
        j["prompt"]
        for j in jobs
        if j["status"] == "completed" and j["id"] not in storage["missing_in_bucket"]
    }
    submits = sorted(e["t"] for e in log if e["kind"] == "submit" and e["status"] == 200)
    ends = [float(str(ti["end"])) for ti in generate if ti["end"] is not None]
    makespan = (max(ends) - submits[0]) if submits and ends else None
    bound = lower_bound(settings)
    kinds = Counter(e["kind"] for e in log)
    return {
        "name": name,
        "run_state": run_state,
        "prompts": len(prompts),
        "makespan_s": makespan,
        **bound,
        "ratio": makespan / bound["lower_bound_s"] if makespan else None,
        "failed_tasks": len(failed),
        "failed_task_ids": sorted(f"{ti['task_id']}[{ti['map_index']}]" for ti in failed),
        "unfinished_tasks": len(unfinished),
        "retried_tasks": sum(1 for ti in generate if int(str(ti["try_number"] or 0)) > 1),
        "tasks_failed_by_429": failed_by_429(cluster, dag_id, run_id, generate),
        "duplicate_submissions": sum(c - 1 for c in by_prompt.values() if c > 1),
        "unsubmitted_prompts": len(set(prompts) - set(by_prompt)),
        "missing_files": len(set(prompts) - stored) + (0 if storage["manifest"] else 1),
        "storage": storage,
        "http_429": stats["http_429"],
        "total_requests": len(log),
        "requests_by_kind": dict(kinds),
        "status_requests": kinds.get("status", 0),
        "status_requests_per_job": kinds.get("status", 0) / len(prompts),
        "max_jobs_in_flight": stats["max_in_flight"]["overall"],
        "rate_limit": budget(log, window_s=settings.window_real_seconds, limit=settings.requests_per_window),
    }
