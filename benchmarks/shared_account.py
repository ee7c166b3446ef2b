"""Several teams' DAGs on one Doitong account at once, in one real Airflow, against one emulator.

A sync ``FluxBatchOperator``, a deferrable one and a mapped deferrable ``FluxGenerateOperator`` are
triggered together; the account's plan (job slots, requests per window) is shared by all three. The
figures: the makespan (first accepted submission to the last of the three final tasks' end) against
the plan's bound for every prompt of the three together, the answers 429 (by kind of request), every
request, and per DAG the run's state, failed tasks, duplicate submissions and missing images.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import dags
from benchmarks.batch import BatchSettings, lower_bound, make_prompts, new_emulator
from benchmarks.batch_operator import batch_figures
from tests.support.airflow_cluster import AirflowCluster


@dataclass(frozen=True)
class SharedAccountSettings:
    """The three DAGs and the one account.

    :param batch_prompts: prompts of the sync batch.
    :param deferrable_prompts: prompts of the deferrable batch.
    :param mapped_prompts: prompts of the mapped ``FluxGenerateOperator``.
    :param time_scale: the emulator's time scale (jobs and the rate-limit window alike).
    :param job_seconds: emulated seconds per job.
    :param plan: the account's plan.
    """

    batch_prompts: int = 30
    deferrable_prompts: int = 30
    mapped_prompts: int = 12
    time_scale: float = 1.0
    job_seconds: float = 4.0
    poll_interval: float = 5.0
    batch_poll_interval: float = 10.0
    plan: str = "pro"
    size: int = 256
    seed: int = 7
    #: Each batch's hard share (``concurrency`` and ``pool_slots`` in the plan-sized ``doitong``
    #: pool, where the mapped tasks take one slot each); ``None``: no share, each paces itself.
    batch_share: int | None = None
    #: The mapped tasks' ``min_defer_seconds`` (see ``docs/sharing.md``).
    mapped_min_defer: float = 0.0

    def as_batch(self) -> BatchSettings:
        """The same account as one batch of every prompt (its bound is the three DAGs' bound)."""
        total = self.batch_prompts + self.deferrable_prompts + self.mapped_prompts
        return BatchSettings(
            prompts=total,
            time_scale=self.time_scale,
            job_seconds=self.job_seconds,
            poll_interval=self.poll_interval,
            batch_poll_interval=self.batch_poll_interval,
            plan=self.plan,
            size=self.size,
            seed=self.seed,
        )


#: name -> (DAG id, the task whose end closes the makespan)
SIDES = {
    "batch": (dags.BATCH_DAG_ID, "generate"),
    "batch_deferrable": (dags.BATCH_DEFERRABLE_DAG_ID, "generate"),
    "mapped": (dags.OURS_DAG_ID, "generate"),
}


def _prompts(settings: SharedAccountSettings) -> dict[str, list[str]]:
    counts = {
        "batch": settings.batch_prompts,
        "batch_deferrable": settings.deferrable_prompts,
        "mapped": settings.mapped_prompts,
    }
    return {side: [f"{side}: {p}" for p in make_prompts(n)] for side, n in counts.items()}


def _conf(side: str, prompts: list[str], work: Path) -> dict[str, Any]:
    output = work / f"images-{side}"
    if side == "mapped":
        return {"prompts": prompts, "output": str(output)}
    prompts_file = work / f"prompts-{side}.txt"
    prompts_file.write_text("".join(p + "\n" for p in prompts))
    return {"prompts_file": str(prompts_file), "output": str(output)}


def _side_figures(
    cluster: AirflowCluster, emu: Any, *, side: str, run_id: str, state: str, prompts: list[str], work: Path
) -> dict[str, Any]:
    """One DAG's run: its state, failed tasks, duplicate submissions and images missing."""
    tis = cluster.task_instances(run_id)
    output = work / f"images-{side}"
    with emu.state.lock:
        jobs = [j for j in emu.state.jobs.values() if j.prompt in set(prompts)]
    per_prompt = Counter(j.prompt for j in jobs)
    figures: dict[str, Any] = {
        "run_state": state,
        "prompts": len(prompts),
        "failed_tasks": sum(1 for ti in tis if ti["state"] == "failed"),
        "jobs": len(jobs),
        "duplicate_submissions": sum(n - 1 for n in per_prompt.values() if n > 1),
    }
    if side == "mapped":
        files = {p.stem for p in output.glob("*.jpg")}
        stored = {j.prompt for j in jobs if j.outcome == "completed" and j.id in files}
        figures["missing_images"] = len(set(prompts) - stored)
    else:
        checked = batch_figures(
            emu=emu, output=output, prompts=prompts, first_submit=None, task_end=None, concurrency=1
        )
        figures["missing_images"] = checked["missing_files"]
        figures["manifest_problems"] = checked["manifest_problems"]
    return figures


def collect(
    cluster: AirflowCluster,
    emu: Any,
    *,
    settings: SharedAccountSettings,
    runs: dict[str, tuple[str, str]],
    prompts: dict[str, list[str]],
    work: Path,
) -> dict[str, Any]:
    """Every figure of the scenario, from the emulator, Airflow's database and the files."""
    log = emu.request_log()
    accepted = sorted(e["t"] for e in log if e["kind"] == "submit" and e["status"] == 200)
    ends = [
        ti["end"]
        for side, (run_id, _) in runs.items()
        for ti in cluster.task_instances(run_id)
        if ti["task_id"] == SIDES[side][1] and ti["end"] is not None
    ]
    makespan = (max(ends) - accepted[0]) if accepted and ends else None
    bound = lower_bound(settings.as_batch())
    refused = Counter(e["kind"] for e in log if e["status"] == 429)
    per_side = {
        side: _side_figures(
            cluster, emu, side=side, run_id=run_id, state=state, prompts=prompts[side], work=work
        )
        for side, (run_id, state) in runs.items()
    }
    return {
        "settings": asdict(settings),
        "makespan_s": makespan,
        **bound,
        "ratio": makespan / bound["lower_bound_s"] if makespan else None,
        "requests": len(log),
        "requests_by_kind": dict(Counter(e["kind"] for e in log)),
        "http_429": sum(refused.values()),
        "http_429_by_kind": dict(refused),
        "failed_tasks": sum(s["failed_tasks"] for s in per_side.values()),
        "airflow_state_races": airflow_state_races(cluster),
        "duplicate_submissions": sum(s["duplicate_submissions"] for s in per_side.values()),
        "missing_images": sum(s["missing_images"] for s in per_side.values()),
        "sides": per_side,
        "timeline": timeline(emu, accepted[0] if accepted else 0.0, prompts),
    }


def airflow_state_races(cluster: AirflowCluster) -> int:
    """Tries the scheduler failed because a deferred task resumed before the executor reported the
    deferring process's exit (Airflow's own race, apache/airflow#67287 and #72716): each is retried
    after the DAG's ``retry_delay`` (the window's length here), which a makespan then includes."""
    log = cluster.home / "scheduler.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return sum(1 for line in text.splitlines() if "but the task instance's state attribute is" in line)


def timeline(emu: Any, t0: float, prompts: dict[str, list[str]]) -> dict[str, Any]:
    """Requests per rate-limit window by kind, and each DAG's submissions, from the first accepted one.

    ``windows``: for each window the emulator opened (a window opens at the first request after the
    last one ended), its start and its requests by kind (``submit_429`` and ``status_429`` counted
    apart); ``submitted``: each DAG's accepted submissions' times, in seconds after ``t0``.
    """
    log = sorted(emu.request_log(), key=lambda e: e["t"])
    length = emu.state.accounts[0].window.length if emu.state.accounts else 60.0
    windows: list[dict[str, Any]] = []
    end = -1.0
    for e in log:
        if e["kind"] == "download":
            continue
        if e["t"] >= end:
            end = math.floor(e["t"]) + length  # the emulator's windows end on whole seconds
            windows.append({"start_s": round(e["t"] - t0, 1), "requests": Counter()})
        kind = e["kind"] + ("_429" if e["status"] == 429 else "")
        windows[-1]["requests"][kind] += 1
    side_of = {p: side for side, ps in prompts.items() for p in ps}
    with emu.state.lock:
        jobs = list(emu.state.jobs.values())
    submitted: dict[str, list[float]] = {side: [] for side in prompts}
    for job in jobs:
        if job.prompt in side_of:
            submitted[side_of[job.prompt]].append(round(job.created_at - t0, 1))
    return {
        "windows": [{**w, "requests": dict(w["requests"])} for w in windows],
        "submitted": {side: sorted(ts) for side, ts in submitted.items()},
        "read": _reads_by_side(emu, t0, {job.id: side_of.get(job.prompt) for job in jobs}),
    }


def _reads_by_side(emu: Any, t0: float, side_of_job: dict[str, str | None]) -> dict[str, list[float]]:
    """Each DAG's status reads, in seconds after ``t0``: its jobs' reads, those within
    :data:`ONE_READ_S` of each other counted as one request (one read asks for many jobs)."""
    reads: dict[str, list[float]] = {}
    for entry in sorted(emu.read_log(), key=lambda e: e["t"]):
        side = side_of_job.get(entry["job"])
        if side is None:
            continue
        times = reads.setdefault(side, [])
        if not times or entry["t"] - t0 - times[-1] > ONE_READ_S:
            times.append(round(entry["t"] - t0, 2))
    return reads


#: Job reads of one DAG this close together are one status request.
ONE_READ_S = 0.05
#: Seconds to wait after the cluster is up, before the DAGs are triggered.
WARM_UP_S = 15.0


def run_shared_account(
    settings: SharedAccountSettings, *, say: Callable[[str], None] = print, keep: Path | None = None
) -> dict[str, Any]:
    """Trigger the three DAGs together on one account and wait for all three."""
    batch = settings.as_batch()
    prompts = _prompts(settings)
    tmp = tempfile.TemporaryDirectory(prefix="doitong-shared-")
    work = Path(keep or tmp.name)
    dags_dir = work / "dags"
    dags_dir.mkdir(parents=True, exist_ok=True)
    retry_delay = batch.window_real_seconds
    (dags_dir / "bench_ours.py").write_text(
        dags.ours_dag(
            poll_interval=settings.poll_interval,
            retry_delay=retry_delay,
            size=settings.size,
            min_defer=settings.mapped_min_defer,
        )
    )
    dags.write_batch_dags(batch, dags_dir, retry_delay=retry_delay, share=settings.batch_share)
    timeout = 600 + 6 * lower_bound(batch)["lower_bound_s"]
    try:
        with contextlib.ExitStack() as stack:
            emu = stack.enter_context(new_emulator(batch))
            one_account = dags.connections(
                dict.fromkeys(("ours", "baseline", "batch", "batch_deferrable"), emu)
            )
            say(f"shared_account: starting Airflow in {work}")
            with AirflowCluster(home=work / "airflow", dags_folder=dags_dir, env=one_account) as cluster:
                cluster.create_pool("doitong", batch.concurrency)
                for dag_id, _ in SIDES.values():
                    cluster.wait_for_dag(dag_id)
                time.sleep(WARM_UP_S)
                triggered = {
                    side: cluster.trigger(dag_id, _conf(side, prompts[side], work))
                    for side, (dag_id, _) in SIDES.items()
                }
                runs = {
                    side: (run_id, cluster.wait_for_run(run_id, timeout=timeout))
                    for side, run_id in triggered.items()
                }
                time.sleep(1)
                result = collect(cluster, emu, settings=settings, runs=runs, prompts=prompts, work=work)
    finally:
        if keep is None:
            tmp.cleanup()
    say(
        f"shared_account: makespan {result['makespan_s']}, ratio {result['ratio']}, "
        f"429s {result['http_429']}, failed tasks {result['failed_tasks']}, "
        f"Airflow's state races {result['airflow_state_races']}"
    )
    return result
