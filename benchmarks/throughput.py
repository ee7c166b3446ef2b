"""Throughput: how close ``FluxBatchOperator`` comes to what the plan allows, side by side in one Airflow.

Scenarios (each against its own fresh emulator, one after the other, in one real Airflow; the
first runs each in an Airflow of its own):

* ``short_jobs``: pro plan, 40 prompts, 3-second jobs at time scale 1, sync and deferrable;
* ``pro_day``: the pro plan's day (10,000 prompts; the quick profile runs fewer), time-scaled;
* ``enterprise``: 1,500 prompts of 1-second jobs with 1,000 jobs at once and 6,000 requests a
  minute (emulator overrides), every API answer delayed by 100 ms (the emulator's ``latency_s``);
  it runs last, under a deadline: past it the run is stopped and recorded as not finished;
* ``first_runs``: the realistic 16-s profile's first run at several job durations around it
  (``benchmarks/first_runs.py``), each in its own Airflow;
* ``prompts_file``: a million-line prompts file, validated and resumed
  (``benchmarks/prompts_file.py``, skipped when that module is absent).

The bound (:func:`plan_bound`) counts every request the plan needs: each submission, and the status
reads without which no slot can be seen free.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from airflow_provider_doitong.client.contract import PLANS
from airflow_provider_doitong.client.protocol import MAX_JOBS_PER_QUERY
from benchmarks import dags
from benchmarks.batch import WARM_UP_S, BatchSettings, collect, lower_bound, make_prompts, settings_doc
from benchmarks.batch_operator import airflow_cpu_seconds, batch_figures, resumes
from benchmarks.first_runs import run_first_runs
from doitong_emulator import DoitongEmulator
from doitong_emulator.faults import FaultConfig
from tests.support.airflow_cluster import AirflowCluster

#: The scenarios that run in Airflow, in the order they run (the one with a deadline last).
CLUSTER_SCENARIOS = ("short_jobs", "pro_day", "enterprise")
SCENARIOS = (*CLUSTER_SCENARIOS, "first_runs", "prompts_file")
#: The sides of a scenario: sync, or sync and deferrable.
SIDES = {"short_jobs": ("sync", "deferrable"), "pro_day": ("sync",), "enterprise": ("sync",)}


@dataclass(frozen=True)
class ThroughputSettings(BatchSettings):
    """A batch scenario: :class:`BatchSettings` plus the emulator's limit overrides and round trip.

    :param concurrent_jobs: jobs at once, instead of the plan's (``contract.PLANS``).
    :param requests_per_minute: requests per rate-limit window, instead of the plan's.
    :param latency_s: real seconds the emulator adds to each API answer (not to image downloads).
    :param deadline_s: real seconds the run may take from its trigger; ``None``: generous, from the bound.
    """

    concurrent_jobs: int | None = None
    requests_per_minute: int | None = None
    latency_s: float = 0.0
    deadline_s: float | None = None

    @property
    def concurrency(self) -> int:
        return int(self.concurrent_jobs or PLANS[self.plan].concurrent_jobs or 0)

    @property
    def requests_per_window(self) -> int:
        return int(self.requests_per_minute or PLANS[self.plan].requests_per_minute or 0)


@dataclass(frozen=True)
class ThroughputProfile:
    """What one profile runs: each scenario's settings, and the prompts file's size.

    :param first_runs: the batch whose first run ``first_runs`` repeats over job durations.
    """

    short_jobs: ThroughputSettings
    pro_day: ThroughputSettings
    enterprise: ThroughputSettings
    first_runs: BatchSettings
    prompts_file_lines: int = 1_000_000


def profile(
    *, day_prompts: int, enterprise_deadline_s: float, first_runs: BatchSettings
) -> ThroughputProfile:
    """The scenarios of issue-sized runs; ``day_prompts`` and the enterprise deadline vary by profile."""
    return ThroughputProfile(
        first_runs=first_runs,
        short_jobs=ThroughputSettings(
            prompts=40, time_scale=1.0, job_seconds=3.0, batch_poll_interval=10.0, batch_min_defer=2.0
        ),
        pro_day=ThroughputSettings(
            prompts=day_prompts, time_scale=0.02, job_seconds=20.0, batch_poll_interval=2.0
        ),
        enterprise=ThroughputSettings(
            prompts=1_500,
            time_scale=1.0,
            job_seconds=1.0,
            batch_poll_interval=10.0,
            plan="enterprise",
            concurrent_jobs=1_000,
            requests_per_minute=6_000,
            latency_s=0.1,
            deadline_s=enterprise_deadline_s,
        ),
    )


def plan_bound(settings: BatchSettings) -> dict[str, float]:
    """The plan's floor with every request it needs: submissions and the reads that free the slots.

    ``waves_s = ceil(N / C) * D``. A slot is seen free only by a status read, and one read sees at
    most ``k = min(C, MAX_JOBS_PER_QUERY)`` newly ended jobs, so the last submission comes after the
    other ``N - 1`` submissions and at least ``ceil((N - C) / k)`` reads: it falls in window
    ``floor((N - 1 + ceil((N - C) / k)) / R)``, and its job takes ``D``: ``rate_s`` is that window's
    start plus ``D``. The bound is the larger. ``submission_bound_s`` is
    :func:`benchmarks.batch.lower_bound`'s (submissions only), for comparison with the batch section.
    """
    n, c, r = settings.prompts, settings.concurrency, settings.requests_per_window
    d, w = settings.job_real_seconds, settings.window_real_seconds
    per_read = min(c, MAX_JOBS_PER_QUERY)
    reads = math.ceil(max(n - c, 0) / per_read)
    waves = math.ceil(n / c) * d
    rate = math.floor((n - 1 + reads) / r) * w + d
    return {
        "waves_s": waves,
        "rate_s": rate,
        "reads_before_last_submission": reads,
        "lower_bound_s": max(waves, rate),
        "submission_bound_s": lower_bound(settings)["lower_bound_s"],
    }


def deadline(settings: ThroughputSettings) -> float:
    """Real seconds a scenario's run may take: its own deadline, or generous room over the bound."""
    if settings.deadline_s is not None:
        return settings.deadline_s
    return 600 + 6 * plan_bound(settings)["lower_bound_s"]


def new_emulator(settings: ThroughputSettings) -> DoitongEmulator:
    """A fresh emulator with the scenario's plan, overrides and round trip."""
    return DoitongEmulator(
        plan=settings.plan,
        time_scale=settings.time_scale,
        job_seconds=settings.job_seconds,
        credits=10_000_000,
        seed=settings.seed,
        concurrent_jobs=settings.concurrent_jobs,
        requests_per_minute=settings.requests_per_minute,
        faults=FaultConfig(seed=settings.seed, latency_s=settings.latency_s),
    )


def dag_id(scenario: str, side: str) -> str:
    return f"doitong_tp_{scenario}_{side}"


def _runs(chosen: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(s, side) for s in CLUSTER_SCENARIOS if s in chosen for side in SIDES[s]]


def run_throughput(
    prof: ThroughputProfile,
    *,
    scenarios: tuple[str, ...] = SCENARIOS,
    say: Callable[[str], None] = print,
    keep: Path | None = None,
) -> dict[str, Any]:
    """Every chosen scenario: the Airflow ones in one cluster, then the first runs (each in its
    own), then the prompts file."""
    result: dict[str, Any] = {}
    runs = _runs(scenarios)
    if runs:
        result.update(_run_cluster(prof, runs, say=say, keep=keep))
    if "first_runs" in scenarios:
        kept = keep / "first_runs" if keep else None
        result["first_runs"] = run_first_runs(prof.first_runs, say=say, keep=kept)
    if "prompts_file" in scenarios:
        result["prompts_file"] = run_prompts_file_scenario(prof.prompts_file_lines, say=say)
    return result


def _run_cluster(
    prof: ThroughputProfile, runs: list[tuple[str, str]], *, say: Callable[[str], None], keep: Path | None
) -> dict[str, Any]:
    tmp = tempfile.TemporaryDirectory(prefix="doitong-throughput-")
    work = Path(keep or tmp.name)
    dags_dir = work / "dags"
    dags_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict[str, Any]] = {}
    try:
        with contextlib.ExitStack() as stack:
            emus = {run: stack.enter_context(new_emulator(getattr(prof, run[0]))) for run in runs}
            env = {}
            for (scenario, side), emu in emus.items():
                settings: ThroughputSettings = getattr(prof, scenario)
                _write_dag(settings, dags_dir, scenario, side)
                conn = json.dumps(
                    {
                        "conn_type": "doitong",
                        "host": emu.base_url,
                        "password": emu.api_key,
                        "extra": {"plan": settings.plan},
                    }
                )
                env[f"AIRFLOW_CONN_{dag_id(scenario, side).upper()}"] = conn
            say(f"throughput: starting Airflow in {work}")
            with AirflowCluster(home=work / "airflow", dags_folder=dags_dir, env=env) as cluster:
                for scenario, side in runs:
                    cluster.wait_for_dag(dag_id(scenario, side))
                time.sleep(WARM_UP_S)  # start-up work settles first, as in the batch section
                for scenario, side in runs:
                    settings = getattr(prof, scenario)
                    figures = run_side(
                        cluster, emus[(scenario, side)], scenario=scenario, side=side, settings=settings,
                        work=work, say=say,
                    )  # fmt: skip
                    found.setdefault(scenario, {"settings": _settings_doc(settings)})[side] = figures
    finally:
        if keep is None:
            tmp.cleanup()
    for scenario, sides in found.items():
        if list(SIDES[scenario]) == ["sync"]:  # one side: its figures at the scenario's top
            found[scenario] = {**sides.pop("sync"), **sides}
    return found


def _settings_doc(settings: ThroughputSettings) -> dict[str, Any]:
    return {**settings_doc(settings), **plan_bound(settings), "deadline_s": deadline(settings)}


def _write_dag(settings: ThroughputSettings, dags_dir: Path, scenario: str, side: str) -> None:
    name = dag_id(scenario, side)
    (dags_dir / f"{name}.py").write_text(
        dags.batch_dag(
            dag_id=name,
            deferrable=side == "deferrable",
            poll_interval=settings.batch_poll_interval,
            min_defer=settings.batch_min_defer,
            retry_delay=settings.window_real_seconds,
            size=settings.size,
            conn_id=name,
            retries=0,  # a try cut short by the deadline is not tried again
            concurrency=settings.concurrent_jobs,  # a custom plan's jobs at once, as its owner sets it
        )
    )


def run_side(
    cluster: AirflowCluster,
    emu: DoitongEmulator,
    *,
    scenario: str,
    side: str,
    settings: ThroughputSettings,
    work: Path,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """One batch task over the scenario's prompts; its figures, the plan's bound counting every request."""
    name = f"{scenario}-{side}"
    prompts = make_prompts(settings.prompts)
    output = work / f"images-{name}"
    prompts_file = work / f"prompts-{name}.txt"
    prompts_file.write_text("".join(p + "\n" for p in prompts))
    conf = {"prompts_file": str(prompts_file), "output": str(output)}
    limit = deadline(settings)
    say(f"throughput/{name}: {len(prompts):,} prompts, deadline {limit:.0f}s")
    before = airflow_cpu_seconds(cluster)
    started = time.time()
    run_id = cluster.trigger(dag_id(scenario, side), conf)
    try:
        state = cluster.wait_for_run(run_id, timeout=limit)
        unfinished = None
    except TimeoutError:
        state, unfinished = "did not finish", limit
        stop_run(cluster, run_id)
    time.sleep(1)
    after = airflow_cpu_seconds(cluster)
    cpu = {k: round(after.get(k, 0.0) - before.get(k, 0.0), 2) for k in after}
    figures = collect(
        name=name, dag_id=dag_id(scenario, side), settings=settings, emu=emu, cluster=cluster,
        run_id=run_id, run_state=state, prompts=prompts, output=output, final_task="generate", cpu_s=cpu,
    )  # fmt: skip
    figures.pop("timeline", None)
    tis = cluster.task_instances(run_id)
    ends = [end for ti in tis if isinstance(end := ti["end"], float)]
    submits = sorted(e["t"] for e in emu.request_log() if e["kind"] == "submit" and e["status"] == 200)
    figures.update(
        batch_figures(
            emu=emu, output=output, prompts=prompts, first_submit=submits[0] if submits else None,
            task_end=max(ends) if ends else None, concurrency=settings.concurrency,
        ),
        resumes=resumes(cluster, dag_id(scenario, side), run_id, tis),
    )  # fmt: skip
    bound = plan_bound(settings)
    figures.update(bound, ratio=_div(figures["makespan_s"], bound["lower_bound_s"]))
    figures.update(
        wall_s=time.time() - started,
        did_not_finish_s=unfinished,
        submissions=len(submits),
        images_on_disk=images_on_disk(output),
        requests_per_image=figures["total_requests"] / max(len(prompts), 1),
    )
    say(
        f"throughput/{name}: {state}, makespan {figures['makespan_s']}, bound {bound['lower_bound_s']:.1f}s, "
        f"ratio {figures['ratio']}, status requests per image {figures['status_requests_per_job']:.2f}"
    )
    return figures


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def images_on_disk(output: Path) -> int:
    """Image files in a batch's output folder (what a run cut short had stored)."""
    if not output.is_dir():
        return 0
    return sum(1 for p in output.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))


def stop_run(cluster: AirflowCluster, run_id: str) -> None:
    """Stop a run past its deadline: SIGKILL its task's processes (the DAG has no retries)."""
    for supervisor in (False, True):
        for pid in cluster.task_pids(run_id, "generate", supervisor=supervisor):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def run_prompts_file_scenario(lines: int, *, say: Callable[[str], None]) -> dict[str, Any]:
    """A ``lines``-line prompts file validated and resumed (``benchmarks/prompts_file.py``), if present."""
    try:
        from benchmarks.prompts_file import run_prompts_file  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        say(f"throughput/prompts_file: skipped ({exc})")
        return {"skipped": f"benchmarks/prompts_file.py could not be imported: {exc}"}
    say(f"throughput/prompts_file: {lines:,} lines")
    result: dict[str, Any] = dict(run_prompts_file(lines=lines, say=say))
    return result


def with_changes(
    prof: ThroughputProfile, *, day: dict[str, Any], enterprise_deadline_s: float | None
) -> ThroughputProfile:
    """``prof`` with the pro day's settings (``prompts``, ``time_scale``, ``job_seconds``) and the
    enterprise deadline changed where given (``None``: unchanged)."""
    given = {k: v for k, v in day.items() if v is not None}
    if given:
        prof = replace(prof, pro_day=replace(prof.pro_day, **given))
    if enterprise_deadline_s is not None:
        prof = replace(prof, enterprise=replace(prof.enterprise, deadline_s=enterprise_deadline_s))
    return prof
