"""What one distributed scenario left behind, from the emulator, the metadata database, S3 and the logs."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

from airflow_provider_doitong.batch.manifest import CONTACT_SHEET_NAME, MANIFEST_NAME
from airflow_provider_doitong.batch.stores import LEDGER_ROOT
from benchmarks.batch import failed_by_429, lower_bound
from benchmarks.distributed_dags import BUCKET
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


def bucket_check(s3: S3Server, prefix: str, prompts: list[str], jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's folder in the bucket against its ``manifest.json`` and the emulator's jobs.

    An item counts as stored when its manifest entry says so, names a completed job of its own
    prompt, and its file is in the folder with the SHA-256 the entry gives (each object is read
    and hashed here). Images in the folder that the manifest does not list are ``unlisted``;
    ``index.html`` and the batch ledger (``.doitong/``) are neither.
    """
    objects = s3.objects(BUCKET, prefix + "/")
    manifest_key = f"{prefix}/{MANIFEST_NAME}"
    manifest = json.loads(s3.read(BUCKET, manifest_key)) if manifest_key in objects else None
    entries = (manifest or {}).get("items") or []
    completed = {j["id"]: j["prompt"] for j in jobs if j["status"] == "completed"}
    verified: set[str] = set()
    problems: list[str] = []
    for entry in entries:
        label = f"item {entry.get('number')}"
        if entry.get("status") != "stored":
            problems.append(f"{label}: {entry.get('status')} ({entry.get('error')})")
            continue
        key = f"{prefix}/{entry.get('file')}"
        if key not in objects:
            problems.append(f"{label}: {entry.get('file')} is not in the bucket")
        elif hashlib.sha256(s3.read(BUCKET, key)).hexdigest() != entry.get("sha256"):
            problems.append(f"{label}: {entry.get('file')} does not match its SHA-256")
        elif completed.get(str(entry.get("job_id"))) != entry.get("prompt"):
            problems.append(f"{label}: job {entry.get('job_id')} is not a completed job of its prompt")
        else:
            verified.add(str(entry.get("prompt")))
    listed = {f"{prefix}/{e.get('file')}" for e in entries}
    images = [k for k in objects if not _bookkeeping(k, prefix)]
    return {
        "objects": len(objects),
        "images_in_bucket": len(images),
        "manifest": manifest is not None,
        "manifest_entries": len(entries),
        "verified": len(verified),
        "missing": sorted(set(prompts) - verified),
        "problems": problems,
        "unlisted": sorted(k for k in images if k not in listed),
        "empty_objects": sorted(k for k, size in objects.items() if size == 0),
        "ambiguous_submissions": sum(int(e.get("ambiguous_submissions") or 0) for e in entries),
    }


def _bookkeeping(key: str, prefix: str) -> bool:
    name = key[len(prefix) + 1 :]
    return name in (MANIFEST_NAME, CONTACT_SHEET_NAME) or name.startswith(f"{LEDGER_ROOT}/")


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
    operator: str,
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
    """Every figure and check of one scenario.

    :param operator: ``mapped``, ``batch`` or ``batch_deferrable``.
    """
    stats = emu.stats()
    log = emu.request_log()
    tis = cluster.task_instances(run_id)
    generate = [ti for ti in tis if ti["task_id"] == "generate"]
    failed = [ti for ti in tis if ti["state"] in FINAL_FAILED]
    unfinished = [ti for ti in tis if ti["state"] not in ("success", *FINAL_FAILED)]
    by_prompt: Counter[str] = Counter(stats["submissions_by_prompt"])
    storage = bucket_check(s3, prefix, prompts, emulator_jobs(emu))
    submits = sorted(e["t"] for e in log if e["kind"] == "submit" and e["status"] == 200)
    ends = [float(str(ti["end"])) for ti in generate if ti["end"] is not None]
    makespan = (max(ends) - submits[0]) if submits and ends else None
    bound = lower_bound(settings)
    kinds = Counter(e["kind"] for e in log)
    return {
        "name": name,
        "operator": operator,
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
        "missing_files": len(storage["missing"]) + (0 if storage["manifest"] else 1),
        "storage": storage,
        "http_429": stats["http_429"],
        "total_requests": len(log),
        "requests_by_kind": dict(kinds),
        "status_requests": kinds.get("status", 0),
        "status_requests_per_job": kinds.get("status", 0) / len(prompts),
        "max_jobs_in_flight": stats["max_in_flight"]["overall"],
        "rate_limit": budget(log, window_s=settings.window_real_seconds, limit=settings.requests_per_window),
    }
