"""The batch benchmark: N prompts through a real Airflow, this provider against the HTTP-provider baseline."""

from __future__ import annotations

import contextlib
import math
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airflow_provider_doitong.client.contract import PLANS, RATE_LIMIT_WINDOW_SECONDS
from benchmarks import dags
from benchmarks.batch_operator import batch_figures, resumes, run_and_measure, task_starts
from doitong_emulator import DoitongEmulator
from tests.support.airflow_cluster import AirflowCluster


@dataclass(frozen=True)
class BatchSettings:
    """One batch comparison.

    :param prompts: how many prompts (N).
    :param time_scale: the emulator's time scale (jobs and the rate-limit window alike).
    :param job_seconds: emulated seconds per job.
    :param poll_interval: the mapped operator's ``poll_interval``, real seconds.
    :param batch_poll_interval: ``FluxBatchOperator``'s ``poll_interval`` (its longest gap between two
        reads; it reads right after each wave is due, so this only bounds how late an unexpected
        early end is seen).
    :param batch_min_defer: the deferrable side's ``min_defer_seconds``: it defers only for quiet
        stretches at least this long (beyond its measured resume time).
    :param baseline_poke_emulated: the baseline sensor's poke interval in emulated seconds (vendor page: 2).
    :param plan: the emulator plan.
    :param size: image width and height.
    :param seed: emulator seed.
    """

    prompts: int = 30
    time_scale: float = 0.25
    job_seconds: float = 160.0
    poll_interval: float = 5.0
    batch_poll_interval: float = 10.0
    batch_min_defer: float = 10.0
    baseline_poke_emulated: float = 2.0
    plan: str = "pro"
    size: int = 256
    seed: int = 7

    @property
    def job_real_seconds(self) -> float:
        return self.job_seconds * self.time_scale

    @property
    def window_real_seconds(self) -> float:
        return RATE_LIMIT_WINDOW_SECONDS * self.time_scale

    @property
    def concurrency(self) -> int:
        return int(PLANS[self.plan].concurrent_jobs or 0)

    @property
    def requests_per_window(self) -> int:
        return int(PLANS[self.plan].requests_per_minute or 0)


def lower_bound(settings: BatchSettings) -> dict[str, float]:
    """The plan's floor: jobs in waves of the concurrent limit, and submissions at the request rate.

    ``waves = ceil(N / C) * D``; ``rate = floor((N - 1) / R) * W + D``; the bound is the larger.
    """
    n, c, r = settings.prompts, settings.concurrency, settings.requests_per_window
    d, w = settings.job_real_seconds, settings.window_real_seconds
    waves = math.ceil(n / c) * d
    rate = math.floor((n - 1) / r) * w + d
    return {"waves_s": waves, "rate_s": rate, "lower_bound_s": max(waves, rate)}


def make_prompts(n: int) -> list[str]:
    subjects = ("a lighthouse", "a fox", "a glass city", "a paper boat", "an old tram", "a desert bloom")
    return [f"{subjects[i % len(subjects)]} at dawn, study {i}" for i in range(n)]


def new_emulator(settings: BatchSettings) -> DoitongEmulator:
    return DoitongEmulator(
        plan=settings.plan,
        time_scale=settings.time_scale,
        job_seconds=settings.job_seconds,
        credits=10_000_000,
        seed=settings.seed,
    )


def _emulator_jobs(emu: DoitongEmulator) -> list[Any]:
    with emu.state.lock:
        return list(emu.state.jobs.values())


def collect(
    *,
    name: str,
    dag_id: str,
    settings: BatchSettings,
    emu: DoitongEmulator,
    cluster: AirflowCluster,
    run_id: str,
    run_state: str,
    prompts: list[str],
    output: Path,
    final_task: str,
    cpu_s: dict[str, float],
) -> dict[str, Any]:
    """Every figure of one side of the comparison, from the emulator, the database and the files."""
    stats = emu.stats()
    log = emu.request_log()
    tis = cluster.task_instances(run_id)
    jobs = _emulator_jobs(emu)
    files = {p.stem: p for p in output.glob("*.jpg")}
    submits = sorted(e["t"] for e in log if e["kind"] == "submit" and e["status"] == 200)
    first_submit = submits[0] if submits else None
    ends = [ti["end"] for ti in tis if ti["task_id"] == final_task and ti["end"] is not None]
    last_end = max(ends) if ends else None
    run_start, run_end = cluster.run_times(run_id)
    makespan = (last_end - first_submit) if first_submit and last_end else None
    bound = lower_bound(settings)
    stored = {j.prompt for j in jobs if j.outcome == "completed" and j.id in files}
    by_prompt: Counter[str] = Counter(stats["submissions_by_prompt"])
    phases = _phases(settings, jobs, files, tis, log, prompts, final_task, first_submit)
    result = {
        "name": name,
        "run_state": run_state,
        "prompts": len(prompts),
        "makespan_s": makespan,
        "run_duration_s": (run_end - run_start) if run_start and run_end else None,
        **bound,
        "ratio": (makespan / bound["lower_bound_s"]) if makespan else None,
        **request_figures(log, jobs, prompts=len(prompts)),
        "http_429": stats["http_429"],
        **task_figures(cluster, dag_id, run_id, tis),
        "duplicate_submissions": sum(c - 1 for c in by_prompt.values() if c > 1),
        "missing_files": len(set(prompts) - stored),
        "max_jobs_in_flight": stats["max_in_flight"]["overall"],
        "phases_s": phases,
        "first_submit_after_run_start_s": (first_submit - run_start) if first_submit and run_start else None,
        "timeline": timeline(log, first_submit),
        "task_starts": task_starts(cluster, dag_id, run_id, tis),
        "airflow_cpu_s": sum(cpu_s.values()),
        "airflow_cpu_s_by_component": cpu_s,
        "airflow_cpu_s_per_image": sum(cpu_s.values()) / len(prompts),
    }
    if dag_id in dags.BATCH_CONN_IDS:  # one task: files are named by item and listed in its manifest
        figures = batch_figures(
            emu=emu,
            output=output,
            prompts=prompts,
            first_submit=first_submit,
            task_end=last_end,
            concurrency=settings.concurrency,
        )
        result.update(figures, resumes=resumes(cluster, dag_id, run_id, tis))
    return result


def task_figures(
    cluster: AirflowCluster, dag_id: str, run_id: str, tis: list[dict[str, Any]]
) -> dict[str, Any]:
    """The run's task instances: failed (and for a 429), retried, tries in all."""
    failed = [ti for ti in tis if ti["state"] in ("failed", "upstream_failed")]
    return {
        "failed_tasks": len(failed),
        "failed_task_ids": sorted(f"{ti['task_id']}[{ti['map_index']}]" for ti in failed),
        "retried_tasks": sum(1 for ti in tis if int(ti["try_number"] or 0) > 1),
        "tasks_failed_by_429": failed_by_429(cluster, dag_id, run_id, tis),
        "task_tries": sum(int(ti["try_number"] or 0) for ti in tis),
    }


def request_figures(log: list[dict[str, Any]], jobs: list[Any], *, prompts: int) -> dict[str, Any]:
    """What the emulator was asked: every request, by kind and by answer, and the status reads."""
    kinds = Counter(e["kind"] for e in log)
    status_codes = Counter(e["status"] for e in log)
    return {
        "total_requests": len(log),
        "requests_by_kind": dict(kinds),
        "responses_by_status": {str(k): v for k, v in sorted(status_codes.items())},
        "status_requests": kinds.get("status", 0),
        "status_requests_per_job": kinds.get("status", 0) / prompts,
        "first_wave_status_requests": first_wave_reads(log, jobs),
    }


def first_wave_reads(log: list[dict[str, Any]], jobs: list[Any]) -> int | None:
    """Status requests until the first job's end was seen: those before it ended, and the next one."""
    ends = [j.finish_at for j in jobs if j.finish_at is not None]
    if not ends:
        return None
    first_end = min(ends)
    reads = sorted(e["t"] for e in log if e["kind"] == "status")
    return sum(1 for t in reads if t < first_end) + (1 if any(t >= first_end for t in reads) else 0)


#: The recurring run's figures kept beside the first run's (``<key>_second_night``).
SECOND_NIGHT_KEYS = (
    "makespan_s",
    "ratio",
    "status_requests",
    "status_requests_per_job",
    "first_wave_status_requests",
    "run_state",
    "duplicate_submissions",
    "missing_files",
)


def second_night(
    cluster: AirflowCluster, emu: DoitongEmulator, *, side: str, first: dict[str, Any], **run: Any
) -> None:
    """Run a batch side's DAG again, as the next night's run of a scheduled batch, and add its figures
    to ``first`` as ``<key>_second_night``: the run reads its first wave at the durations the first
    run left in its result. The emulator is reset in between (its jobs and counters, not its
    server), so the figures are the second run's alone."""
    emu.reset()
    again = run_one(cluster, emu, name=f"{side}_second_night", **run)
    first.update({f"{key}_second_night": again.get(key) for key in SECOND_NIGHT_KEYS})


RATE_LIMIT_MARKERS = re.compile(
    r"\b429\b|RATE_LIMITED|CONCURRENCY_LIMIT|Too Many Requests|rate[ -]limit", re.I
)


def failed_by_429(cluster: AirflowCluster, dag_id: str, run_id: str, tis: list[dict[str, Any]]) -> int:
    """Task instances with a failed attempt whose log names a 429."""
    count = 0
    for ti in tis:
        tries = int(ti["try_number"] or 0)
        last_failed = ti["state"] in ("failed", "up_for_retry")
        attempts = range(1, tries + 1 if last_failed else tries)
        for attempt in attempts:
            text = cluster.attempt_log(dag_id, run_id, str(ti["task_id"]), int(ti["map_index"]), attempt)
            failed_lines = [line for line in text.splitlines() if "error" in line.lower()]
            if any(RATE_LIMIT_MARKERS.search(line) for line in failed_lines):
                count += 1
                break
    return count


def timeline(log: list[dict[str, Any]], t0: float | None, bin_s: float = 1.0) -> dict[str, Any]:
    """Requests per ``bin_s`` seconds from the first submission, by kind, and the 429s among them."""
    if not log:
        return {"bin_s": bin_s, "kinds": {}, "http_429": []}
    start = t0 if t0 is not None else min(e["t"] for e in log)
    bins = int(max(e["t"] - start for e in log) // bin_s) + 1
    kinds: dict[str, list[int]] = {}
    limited = [0] * bins
    for e in log:
        i = int((e["t"] - start) // bin_s)
        if i < 0:
            continue
        kinds.setdefault(e["kind"], [0] * bins)[i] += 1
        if e["status"] == 429:
            limited[i] += 1
    return {"bin_s": bin_s, "kinds": kinds, "http_429": limited}


def _phases(
    settings: BatchSettings,
    jobs: list[Any],
    files: dict[str, Path],
    tis: list[dict[str, Any]],
    log: list[dict[str, Any]],
    prompts: list[str],
    final_task: str,
    first_submit: float | None,
) -> dict[str, Any]:
    """Where a pool slot's time goes besides the job itself, summarised over the batch (real seconds).

    ``completion_to_stored``: job done -> image file written; ``detected``: job done -> the first
    status request after it (meaningful for the coalesced poller only); ``stored_to_task_end``: file
    written -> task instance ended; ``slot_handover``: a task ending -> the next submission (the
    k-th end frees the slot of the (k + C)-th submission); ``slot_idle_per_job``: the plan's
    job-slot seconds not spent running a job, divided by N.
    """
    completed = [j for j in jobs if j.finish_at is not None and j.outcome == "completed"]
    status_times = sorted(e["t"] for e in log if e["kind"] == "status" and e["status"] == 200)
    detected = []
    for job in completed:
        later = [t for t in status_times if t >= job.finish_at]
        if later:
            detected.append(later[0] - job.finish_at)
    stored = [files[j.id].stat().st_mtime - j.finish_at for j in completed if j.id in files]
    end_by_index = {
        ti["map_index"]: ti["end"] for ti in tis if ti["task_id"] == final_task and ti["end"] is not None
    }
    job_by_prompt = {j.prompt: j for j in completed if j.id in files}
    to_end = [
        end_by_index[i] - files[job_by_prompt[p].id].stat().st_mtime
        for i, p in enumerate(prompts)
        if i in end_by_index and p in job_by_prompt
    ]
    submits = sorted(j.created_at for j in jobs)
    ends = sorted(end_by_index.values())
    c = settings.concurrency
    handover = [s - e for s, e in zip(submits[c:], ends, strict=False) if s >= e]
    idle = None
    if first_submit is not None and ends:
        span = max(ends) - first_submit
        busy = sum(min(j.finish_at, max(ends)) - j.created_at for j in completed)
        idle = (c * span - busy) / max(len(prompts), 1)
    return {
        "completion_to_stored": _summary(stored),
        "completion_to_first_status_request": _summary(detected),
        "stored_to_task_end": _summary(to_end),
        "slot_handover": _summary(handover),
        "slot_idle_per_job": idle,
    }


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "mean": statistics.fmean(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def run_one(
    cluster: AirflowCluster,
    emu: DoitongEmulator,
    *,
    name: str,
    dag_id: str,
    settings: BatchSettings,
    prompts: list[str],
    work: Path,
    final_task: str,
    timeout: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    output = work / f"images-{name}"
    say(f"batch/{name}: {len(prompts)} prompts")
    if dag_id in dags.BATCH_CONN_IDS:
        prompts_file = work / f"prompts-{name}.txt"
        prompts_file.write_text("".join(p + "\n" for p in prompts))
        conf: dict[str, Any] = {"prompts_file": str(prompts_file), "output": str(output)}
    else:
        conf = {"prompts": prompts, "output": str(output)}
    run_id, state, seconds, cpu = run_and_measure(cluster, dag_id=dag_id, conf=conf, timeout=timeout, say=say)
    result = collect(
        name=name,
        dag_id=dag_id,
        settings=settings,
        emu=emu,
        cluster=cluster,
        run_id=run_id,
        run_state=state,
        prompts=prompts,
        output=output,
        final_task=final_task,
        cpu_s=cpu,
    )
    say(f"batch/{name}: makespan {result['makespan_s']}, ratio {result['ratio']}")
    return result


#: Seconds to wait after the cluster is up, before the first side runs.
WARM_UP_S = 15.0
#: side -> (DAG id, the task whose end closes the makespan)
SIDES = {
    "ours": (dags.OURS_DAG_ID, "generate"),
    "baseline": (dags.BASELINE_DAG_ID, "image.download"),
    "batch": (dags.BATCH_DAG_ID, "generate"),
    "batch_deferrable": (dags.BATCH_DEFERRABLE_DAG_ID, "generate"),
}


def run_batch(
    settings: BatchSettings,
    *,
    say: Callable[[str], None] = print,
    keep: Path | None = None,
    sides: tuple[str, ...] = tuple(SIDES),
    second_nights: bool = True,
) -> dict[str, Any]:
    """Run every side in ``sides``, one after the other, each on its own fresh emulator, in one Airflow.

    :param second_nights: run each batch side a second time, as the next night's run (:func:`second_night`).
    """
    prompts = make_prompts(settings.prompts)
    tmp = tempfile.TemporaryDirectory(prefix="doitong-bench-")
    work = Path(keep or tmp.name)
    dags_dir = work / "dags"
    dags_dir.mkdir(parents=True, exist_ok=True)
    retry_delay = settings.window_real_seconds
    poke = dags.write_all(settings, dags_dir, retry_delay)
    timeout = 600 + 6 * lower_bound(settings)["lower_bound_s"]
    results: dict[str, Any] = dict.fromkeys(SIDES)
    try:
        with contextlib.ExitStack() as stack:
            emus = {side: stack.enter_context(new_emulator(settings)) for side in SIDES}
            say(f"batch: starting Airflow in {work}")
            with AirflowCluster(
                home=work / "airflow", dags_folder=dags_dir, env=dags.connections(emus)
            ) as cluster:
                cluster.create_pool("doitong", settings.concurrency)
                for dag_id, _ in SIDES.values():
                    cluster.wait_for_dag(dag_id)
                time.sleep(WARM_UP_S)  # let start-up work settle before the first side's CPU is measured
                for side in (s for s in SIDES if s in sides):
                    dag_id, final_task = SIDES[side]
                    run: dict[str, Any] = {
                        "dag_id": dag_id,
                        "settings": settings,
                        "prompts": prompts,
                        "work": work,
                        "final_task": final_task,
                        "timeout": timeout,
                        "say": say,
                    }
                    results[side] = run_one(cluster, emus[side], name=side, **run)
                    if second_nights and dag_id in dags.BATCH_CONN_IDS:
                        second_night(cluster, emus[side], side=side, first=results[side], **run)
                seen = dict(cluster.states_seen)
        _count_deferred(results, seen)
    finally:
        if keep is None:
            tmp.cleanup()
    ours, baseline = results["ours"], results["baseline"]
    return {
        "settings": {
            **settings_doc(settings),
            "baseline_poke_real_seconds": poke,
            "retry_delay_s": retry_delay,
        },
        "ours": ours,
        "baseline": baseline,
        "batch_operator": results["batch"],
        "batch_operator_deferrable": results["batch_deferrable"],
        "vs_baseline": comparison(ours, baseline) if ours and baseline else None,
    }


def settings_doc(settings: BatchSettings) -> dict[str, Any]:
    """The settings as the result document records them, with the real-time figures they imply."""
    return {
        **asdict(settings),
        "job_real_seconds": settings.job_real_seconds,
        "window_real_seconds": settings.window_real_seconds,
        "concurrency": settings.concurrency,
        "requests_per_window": settings.requests_per_window,
    }


def _count_deferred(results: dict[str, Any], seen: dict[str, set[str]]) -> None:
    """How many mapped waits were ever deferred (the baseline's never are: see the README)."""
    for side, prefix, key in (
        ("baseline", "image.wait[", "wait_tasks_ever_deferred"),
        ("ours", "generate[", "tasks_ever_deferred"),
    ):
        if results[side] is not None:
            results[side][key] = sum(
                "deferred" in states for k, states in seen.items() if k.startswith(prefix)
            )


def comparison(ours: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    """Ours divided by the baseline, and the baseline divided by ours for request counts."""

    def div(a: float | None, b: float | None) -> float | None:
        return (a / b) if a is not None and b else None

    return {
        "makespan_ours_over_baseline": div(ours["makespan_s"], baseline["makespan_s"]),
        "total_requests_baseline_over_ours": div(baseline["total_requests"], ours["total_requests"]),
        "status_requests_baseline_over_ours": div(baseline["status_requests"], ours["status_requests"]),
        "http_429_baseline_minus_ours": baseline["http_429"] - ours["http_429"],
    }
