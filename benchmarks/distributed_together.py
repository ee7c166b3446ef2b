"""The distributed run's scenarios of several DAG runs at once on one account.

* ``shared_account``: three teams' DAGs triggered together (a sync ``FluxBatchOperator``, a
  deferrable one and the mapped deferrable ``FluxGenerateOperator``, as in
  :mod:`benchmarks.shared_account`), with a Celery worker SIGKILLed once the first wave is in and
  the batches wait, then a triggerer SIGKILLed once both hold waits;
* ``cache_concurrent``: two ``FluxBatchOperator`` runs (one sync, one deferrable) of the same
  prompts, started together, both with the image cache on an ``s3://`` prefix of the run's bucket,
  with a worker SIGKILLed mid-run: the emulator should make one job per distinct prompt.

Every run's folder is checked as the single-run scenarios' are
(:func:`benchmarks.distributed_checks.bucket_check`: each image read and hashed against its
manifest entry, and its job a completed job of its prompt, also for images copied from the cache).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_provider_doitong.batch.manifest import MANIFEST_NAME
from benchmarks.batch import failed_by_429, lower_bound, make_prompts
from benchmarks.distributed_checks import FINAL_FAILED, bucket_check, budget, emulator_jobs
from benchmarks.distributed_dags import (
    BATCH_DAG_ID,
    BATCH_DEFERRABLE_DAG_ID,
    BUCKET,
    CACHE_DAG_IDS,
    MAPPED_DAG_ID,
    PROMPTS_PREFIX,
    s3_url,
)
from benchmarks.distributed_kills import kill_triggerer, kill_worker_when_quiet
from doitong_emulator import DoitongEmulator
from tests.support.distributed_cluster import DistributedCluster
from tests.support.services import S3Server

if TYPE_CHECKING:
    from benchmarks.distributed import DistributedSettings


@dataclass(frozen=True, kw_only=True)
class Side:
    """One DAG run of a scenario: its name, its DAG, and ``mapped`` (prompts in the conf) or a batch."""

    name: str
    dag_id: str
    operator: str


SHARED_SIDES = (
    Side(name="batch", dag_id=BATCH_DAG_ID, operator="batch"),
    Side(name="batch_deferrable", dag_id=BATCH_DEFERRABLE_DAG_ID, operator="batch_deferrable"),
    Side(name="mapped", dag_id=MAPPED_DAG_ID, operator="mapped"),
)
CACHE_SIDES = (
    Side(name="one", dag_id=CACHE_DAG_IDS[0], operator="batch"),
    Side(name="two", dag_id=CACHE_DAG_IDS[1], operator="batch_deferrable"),
)


def side_prompts(name: str, settings: DistributedSettings) -> dict[str, list[str]]:
    """Each side's prompts: distinct per side for ``shared_account``, the same for ``cache_concurrent``."""
    if name == "cache_concurrent":
        same = [f"{name}: {p}" for p in make_prompts(settings.cache_prompts)]
        return {side.name: same for side in CACHE_SIDES}
    counts = dict(zip((s.name for s in SHARED_SIDES), settings.shared_prompts, strict=True))
    return {side: [f"{name} {side}: {p}" for p in make_prompts(n)] for side, n in counts.items()}


def submission_figures(log: list[dict[str, Any]], jobs_by_prompt: dict[str, int]) -> dict[str, Any]:
    """What the account was asked for: POSTs (accepted or not), jobs, distinct prompts, extra jobs.

    ``duplicate_submissions`` counts every job beyond the first of its prompt, whichever run made it.
    """
    posts = [e for e in log if e["kind"] == "submit"]
    return {
        "posts": len(posts),
        "posts_accepted": sum(1 for e in posts if e["status"] == 200),
        "jobs": sum(jobs_by_prompt.values()),
        "distinct_prompts_submitted": len(jobs_by_prompt),
        "duplicate_submissions": sum(n - 1 for n in jobs_by_prompt.values() if n > 1),
    }


def makespan(log: list[dict[str, Any]], ends: list[float | None]) -> float | None:
    """First accepted submission to the last of the runs' final tasks' end (``None`` if either is absent)."""
    accepted = [e["t"] for e in log if e["kind"] == "submit" and e["status"] == 200]
    finished = [t for t in ends if t is not None]
    return (max(finished) - min(accepted)) if accepted and finished else None


def killed_summary(event: dict[str, dict[str, Any]], *, first_submission: float) -> dict[str, Any]:
    """The scenario's kills as the single-run scenarios report theirs (``component``, ``missed``),
    with each kill's own record (``worker``, ``triggerer``) timed from the first submission."""
    summary: dict[str, Any] = {
        "component": ", ".join(str(k["component"]) for k in event.values() if k.get("component")) or None
    }
    missed = [f"{part}: {k['missed']}" for part, k in event.items() if "missed" in k]
    if missed:
        summary["missed"] = "; ".join(missed)
    for part, kill in event.items():
        summary[part] = {k: v for k, v in kill.items() if k != "at"}
        summary[part]["after_first_submission_s"] = round(kill["at"] - first_submission, 1)
    return summary


def _conf(side: Side, prompts: list[str], prefix: str, s3: S3Server, cache: str | None) -> dict[str, Any]:
    conf: dict[str, Any] = {"output": s3_url(prefix)}
    if cache is not None:
        conf["cache"] = cache
    if side.operator == "mapped":
        conf["prompts"] = prompts
    else:
        key = f"{PROMPTS_PREFIX}/{prefix}.txt"
        s3.client().put_object(Bucket=BUCKET, Key=key, Body="\n".join(prompts).encode())
        conf["prompts_file"] = s3_url(key)
    return conf


def _during(
    name: str, cluster: DistributedCluster, emu: DoitongEmulator, settings: DistributedSettings
) -> dict[str, Any]:
    """The worker kill (both scenarios), then for ``shared_account`` the triggerer kill."""
    slots = int(settings.concurrency)
    event: dict[str, Any] = {}
    try:
        event["worker"] = kill_worker_when_quiet(cluster, emu, after=slots)
    except TimeoutError as exc:
        event["worker"] = {"component": None, "at": time.time(), "missed": str(exc)}
    if name == "shared_account":
        try:
            event["triggerer"] = kill_triggerer(cluster, emu, [], timeout=120)
        except TimeoutError as exc:
            event["triggerer"] = {"component": None, "at": time.time(), "missed": str(exc)}
    return event


def run_together(
    name: str,
    *,
    settings: DistributedSettings,
    cluster: DistributedCluster,
    emu: DoitongEmulator,
    s3: S3Server,
    timeout: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Trigger every side at once (in parallel: each trigger is a CLI call), kill, wait, check."""
    sides = CACHE_SIDES if name == "cache_concurrent" else SHARED_SIDES
    emu.reset()
    stamp = time.time_ns()
    prompts = side_prompts(name, settings)
    prefixes = {side.name: f"{name}-{side.name}-{stamp}" for side in sides}
    cache = s3_url(f"cache-{stamp}/") if name == "cache_concurrent" else None
    confs = {s.name: _conf(s, prompts[s.name], prefixes[s.name], s3, cache) for s in sides}
    say(f"distributed/{name}: " + ", ".join(f"{s.name} {len(prompts[s.name])}" for s in sides))
    started = time.time()
    with ThreadPoolExecutor(len(sides)) as pool:
        futures = {s.name: pool.submit(cluster.trigger, s.dag_id, confs[s.name]) for s in sides}
        run_ids = {side: future.result() for side, future in futures.items()}
    event = _during(name, cluster, emu, settings)
    for part, kill in event.items():
        say(f"distributed/{name}: {part} kill: {kill.get('component') or kill.get('missed')}")
    states = {s.name: cluster.wait_for_run(run_ids[s.name], timeout=timeout) for s in sides}
    time.sleep(1)
    result = collect_together(
        name,
        sides=sides,
        run_ids=run_ids,
        states=states,
        prompts=prompts,
        prefixes=prefixes,
        settings=settings,
        emu=emu,
        cluster=cluster,
        s3=s3,
    )
    result["cache_path"] = cache
    first = min((e["t"] for e in emu.request_log() if e["kind"] == "submit"), default=started)
    result["killed"] = killed_summary(event, first_submission=first)
    say(
        f"distributed/{name}: {states} in {time.time() - started:.0f}s, makespan {result['makespan_s']}, "
        f"bound {result['lower_bound_s']}, 429s {result['http_429']}, jobs {result['jobs']} for "
        f"{result['distinct_prompts']} prompts, duplicates {result['duplicate_submissions']}, "
        f"missing {result['missing_files']}, failed {result['failed_tasks']}"
    )
    return result


def _side_check(
    side: Side,
    *,
    run_id: str,
    state: str,
    prompts: list[str],
    prefix: str,
    emu: DoitongEmulator,
    cluster: DistributedCluster,
    s3: S3Server,
) -> dict[str, Any]:
    tis = cluster.task_instances(run_id)
    generate = [ti for ti in tis if ti["task_id"] == "generate"]
    storage = bucket_check(s3, prefix, prompts, emulator_jobs(emu))
    manifest = json.loads(s3.read(BUCKET, f"{prefix}/{MANIFEST_NAME}")) if storage["manifest"] else {}
    return {
        "dag_id": side.dag_id,
        "operator": side.operator,
        "run_id": run_id,
        "run_state": state,
        "prompts": len(prompts),
        "failed_tasks": sum(1 for ti in tis if ti["state"] in FINAL_FAILED),
        "unfinished_tasks": sum(1 for ti in tis if ti["state"] not in ("success", *FINAL_FAILED)),
        "retried_tasks": sum(1 for ti in generate if int(str(ti["try_number"] or 0)) > 1),
        "tasks_failed_by_429": failed_by_429(cluster, side.dag_id, run_id, generate),
        "missing_files": len(storage["missing"]) + (0 if storage["manifest"] else 1),
        "cached_items": sum(1 for entry in manifest.get("items") or [] if entry.get("cached")),
        "generate_end": max(
            (float(str(ti["end"])) for ti in generate if ti["end"] is not None), default=None
        ),
        "storage": storage,
    }


def collect_together(
    name: str,
    *,
    sides: tuple[Side, ...],
    run_ids: dict[str, str],
    states: dict[str, str],
    prompts: dict[str, list[str]],
    prefixes: dict[str, str],
    settings: DistributedSettings,
    emu: DoitongEmulator,
    cluster: DistributedCluster,
    s3: S3Server,
) -> dict[str, Any]:
    """The scenario's figures: the whole (makespan against the bound of every distinct prompt, 429s,
    jobs against distinct prompts) and each run's (state, failed tasks, images verified, cache hits)."""
    log = emu.request_log()
    per_side = {
        s.name: _side_check(
            s,
            run_id=run_ids[s.name],
            state=states[s.name],
            prompts=prompts[s.name],
            prefix=prefixes[s.name],
            emu=emu,
            cluster=cluster,
            s3=s3,
        )
        for s in sides
    }
    distinct = {p for ps in prompts.values() for p in ps}
    bound = lower_bound(replace(settings, prompts=len(distinct)))
    span = makespan(log, [r["generate_end"] for r in per_side.values()])
    kinds = Counter(e["kind"] for e in log)
    return {
        "name": name,
        "operator": "+".join(s.operator for s in sides),
        "run_state": ", ".join(sorted(set(states.values()))),
        "prompts": sum(len(p) for p in prompts.values()),
        "distinct_prompts": len(distinct),
        "makespan_s": span,
        **bound,
        "ratio": span / bound["lower_bound_s"] if span else None,
        **{
            key: sum(r[key] for r in per_side.values())
            for key in (
                "failed_tasks",
                "unfinished_tasks",
                "retried_tasks",
                "tasks_failed_by_429",
                "missing_files",
                "cached_items",
            )
        },
        **submission_figures(log, dict(emu.stats()["submissions_by_prompt"])),
        "unsubmitted_prompts": len(distinct - set(emu.stats()["submissions_by_prompt"])),
        "http_429": emu.stats()["http_429"],
        "http_429_by_kind": dict(Counter(e["kind"] for e in log if e["status"] == 429)),
        "total_requests": len(log),
        "requests_by_kind": dict(kinds),
        "status_requests": kinds.get("status", 0),
        "status_requests_per_job": kinds.get("status", 0) / len(distinct),
        "max_jobs_in_flight": emu.stats()["max_in_flight"]["overall"],
        "rate_limit": budget(log, window_s=settings.window_real_seconds, limit=settings.requests_per_window),
        "sides": per_side,
    }
