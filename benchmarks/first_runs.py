"""A batch's first run over a spread of job durations: what its reads cost before any end is seen.

A first run knows nothing of its jobs' durations: it reads the first wave at intervals growing
with the jobs' age until one of them ends. Where that end falls between two reads decides how late
the first slots are refilled, so one job duration measures one phase of the schedule, lucky or not.
This scenario runs the realistic 16-s profile's sync batch (:data:`benchmarks.run.PROFILES`'
``quick`` batch) at several job durations around it, each in its own Airflow and emulator, one
after the other, and keeps the median and the worst of each figure.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the module renders results without the emulator or Airflow
    from benchmarks.batch import BatchSettings

#: The job durations run, as shares of the profile's.
SHARES = (0.875, 0.9375, 1.0, 1.0625, 1.125)
#: The figures kept of each run.
FIGURES = (
    "run_state",
    "ratio",
    "makespan_s",
    "lower_bound_s",
    "status_requests",
    "status_requests_per_job",
    "first_wave_status_requests",
    "http_429",
    "duplicate_submissions",
    "missing_files",
)


def run_first_runs(
    settings: BatchSettings,
    *,
    shares: Sequence[float] = SHARES,
    say: Callable[[str], None] = print,
    keep: Path | None = None,
) -> dict[str, Any]:
    """The sync batch's first run at each of ``shares`` of ``settings.job_seconds``; a run that
    raised is kept as its error (and leaves the medians unmeasured)."""
    from benchmarks.batch import run_batch  # starts Airflow: not needed to render a result

    runs: list[dict[str, Any]] = []
    for share in shares:
        at = replace(settings, job_seconds=settings.job_seconds * share)
        say(f"throughput/first_runs: jobs of {at.job_real_seconds:g} s")
        try:
            result = run_batch(
                at,
                say=say,
                keep=keep / f"{share:g}" if keep else None,
                sides=("batch",),
                second_nights=False,
            )["batch_operator"]
        except Exception as exc:  # noqa: BLE001 - the other durations' runs are still worth keeping
            say(f"throughput/first_runs: jobs of {at.job_real_seconds:g} s failed: {exc!r}")
            result = {"run_state": f"error: {exc!r}"}
        runs.append({"job_real_seconds": at.job_real_seconds, **{k: result.get(k) for k in FIGURES}})
    return summarize(runs, settings=settings)


def summarize(runs: list[dict[str, Any]], *, settings: BatchSettings) -> dict[str, Any]:
    """The runs, with the median and worst of their ratios and reads, and their sums of faults.

    A figure is measured only when every run succeeded and has it: a median of the runs that
    happened to finish would flatter the schedule.
    """
    complete = bool(runs) and all(r.get("run_state") == "success" for r in runs)

    def values(key: str) -> list[float] | None:
        found = [float(r[key]) for r in runs if isinstance(r.get(key), int | float)]
        return found if complete and len(found) == len(runs) else None

    def sums(key: str) -> int | None:
        found = values(key)
        return None if found is None else int(sum(found))

    ratios, reads = values("ratio"), values("status_requests_per_job")
    return {
        "settings": {"prompts": settings.prompts, "profile_job_real_seconds": settings.job_real_seconds},
        "runs": runs,
        "runs_succeeded": sum(r.get("run_state") == "success" for r in runs),
        "median_ratio": statistics.median(ratios) if ratios else None,
        "max_ratio": max(ratios) if ratios else None,
        "median_status_requests_per_job": statistics.median(reads) if reads else None,
        "max_status_requests_per_job": max(reads) if reads else None,
        **{key: sums(key) for key in ("http_429", "duplicate_submissions", "missing_files")},
    }


def first_runs_markdown(found: dict[str, Any]) -> list[str]:
    """The first runs' table: one row a job duration, then the median and the worst."""
    out = [
        "#### A first run over job durations (sync, nothing known of the jobs' durations)\n",
        "| jobs (s) | makespan / bound | status requests per image | reads until the first end is seen |",
        "|---:|---:|---:|---:|",
    ]
    for run in found.get("runs", []):
        out.append(
            f"| {run['job_real_seconds']:g} | {_f(run.get('ratio'), 3)} | "
            f"{_f(run.get('status_requests_per_job'), 2)} | {_f(run.get('first_wave_status_requests'), 0)} |"
        )
    out.append(
        f"| median | {_f(found.get('median_ratio'), 3)} | {_f(found.get('median_status_requests_per_job'), 2)} | |"
    )
    out.append(
        f"| worst | {_f(found.get('max_ratio'), 3)} | {_f(found.get('max_status_requests_per_job'), 2)} | |"
    )
    out.append("")
    return out


def _f(value: Any, digits: int) -> str:
    return "n/a" if not isinstance(value, int | float) else f"{value:,.{digits}f}"
