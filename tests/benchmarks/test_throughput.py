"""The throughput benchmark's pure parts: the plan's bound, the goals of a run cut short, the table."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.batch import BatchSettings
from benchmarks.first_runs import summarize
from benchmarks.report import evaluate_goals, markdown
from benchmarks.throughput import ThroughputSettings, plan_bound, profile, with_changes


def test_short_jobs_bound_is_the_waves_of_the_plan() -> None:
    settings = ThroughputSettings(prompts=40, time_scale=1.0, job_seconds=3.0)
    bound = plan_bound(settings)
    assert bound["waves_s"] == 12.0  # four waves of ten 3-second jobs
    assert bound["lower_bound_s"] == 12.0


def test_enterprise_overrides_replace_the_plan_limits() -> None:
    settings = profile(day_prompts=2_000, enterprise_deadline_s=300.0, first_runs=BatchSettings()).enterprise
    assert (settings.concurrency, settings.requests_per_window) == (1_000, 6_000)
    bound = plan_bound(settings)
    assert bound["waves_s"] == 2.0  # 1,000 then 500 one-second jobs
    assert bound["reads_before_last_submission"] == 5  # 500 ended jobs, 100 a read
    assert bound["lower_bound_s"] == 2.0


def test_the_reads_that_free_slots_count_against_the_rate() -> None:
    """The pro day at time scale 0.05 with 10-s jobs: 60 submissions a 3-s window fill the plan exactly,
    so the 999 reads that see the slots free push the last submission 3 windows later."""
    settings = ThroughputSettings(prompts=10_000, time_scale=0.05, job_seconds=10.0)
    bound = plan_bound(settings)
    assert bound["submission_bound_s"] == 500.0
    assert bound["reads_before_last_submission"] == 999
    assert bound["rate_s"] == pytest.approx(183 * 3.0 + 0.5)
    assert bound["lower_bound_s"] == pytest.approx(549.5)


def test_with_changes_sets_the_day_and_the_enterprise_deadline_only_where_given() -> None:
    prof = profile(day_prompts=2_000, enterprise_deadline_s=300.0, first_runs=BatchSettings())
    same = with_changes(prof, day={"prompts": None}, enterprise_deadline_s=None)
    assert same == prof
    changed = with_changes(prof, day={"prompts": 10_000, "time_scale": 0.05}, enterprise_deadline_s=60.0)
    assert (changed.pro_day.prompts, changed.pro_day.time_scale, changed.pro_day.job_seconds) == (
        10_000,
        0.05,
        20.0,
    )
    assert changed.enterprise.deadline_s == 60.0
    assert changed.short_jobs == prof.short_jobs


def _side(ratio: float | None, **more: Any) -> dict[str, Any]:
    return {
        "prompts": 40,
        "run_state": "success",
        "makespan_s": None if ratio is None else 12.0 * ratio,
        "lower_bound_s": 12.0,
        "ratio": ratio,
        "status_requests_per_job": 0.4,
        "duplicate_submissions": 0,
        "missing_files": 0,
        **more,
    }


def _doc() -> dict[str, Any]:
    settings = {
        "prompts": 40,
        "job_real_seconds": 3.0,
        "concurrency": 10,
        "requests_per_window": 60,
        "window_real_seconds": 60.0,
        "latency_s": 0.0,
    }
    unfinished = _side(None, run_state="did not finish", did_not_finish_s=300.0, missing_files=1_200)
    return {
        "meta": {"started": "now", "profile": "quick", "cpus": 2, "duration_s": 1.0},
        "throughput": {
            "short_jobs": {"settings": settings, "sync": _side(1.08), "deferrable": _side(1.3)},
            "enterprise": {**unfinished, "settings": {**settings, "latency_s": 0.1}},
            "prompts_file": {"skipped": "benchmarks/prompts_file.py could not be imported"},
        },
    }


def _goals(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["key"]: g for g in evaluate_goals(doc)}


def test_goals_of_the_scenarios_that_ran() -> None:
    goals = _goals(_doc())
    assert goals["throughput.short_jobs.sync.ratio"]["met"] is True
    assert goals["throughput.short_jobs.deferrable.ratio"]["met"] is False


def test_a_run_stopped_at_its_deadline_misses_its_goal_and_says_so() -> None:
    goal = _goals(_doc())["throughput.enterprise.makespan_s"]
    assert goal["measured"] == "did not finish in 300 s"
    assert goal["met"] is False


def test_a_skipped_scenario_neither_meets_nor_misses_its_goals() -> None:
    goals = _goals(_doc())
    for key in ("throughput.prompts_file.validate_s", "throughput.prompts_file.peak_rss_mb"):
        assert (goals[key]["measured"], goals[key]["met"]) == ("skipped", None)
    assert "throughput.pro_day.ratio" not in goals  # not run
    assert "throughput.pro_day.duplicate_submissions" not in goals


def test_the_table_shows_each_scenario_and_the_unfinished_run() -> None:
    doc = _doc()
    doc["goals"] = evaluate_goals(doc)
    text = markdown(doc)
    assert "| figure | short jobs, sync | short jobs, deferrable | enterprise |" in text
    assert "40 x 3 s, 10 at once, 60 / 60 s, +100 ms" in text
    assert "| did not finish in (s) | n/a | n/a | 300 |" in text
    assert "Prompts file: skipped" in text
    assert (
        "| enterprise, 1,500 prompts, 100-ms round trip: makespan (s) | <= 20 | did not finish in 300 s | no |"
        in text
    )


def test_the_table_puts_the_realistic_profiles_beside_the_scenarios() -> None:
    doc = _doc()
    batch_settings = {"plan": "pro", "time_scale": 0.25, "job_seconds": 64.0, "poll_interval": 3.2}
    batch_settings.update(batch_poll_interval=10.0, baseline_poke_real_seconds=0.5, job_real_seconds=16.0)
    realistic = {"settings": {**doc["throughput"]["short_jobs"]["settings"], **batch_settings}}
    doc["batch_operator"] = {**_side(1.01, prompts=30), **realistic}
    doc["goals"] = evaluate_goals(doc)
    text = markdown(doc)
    assert "| enterprise | realistic (batch section), sync |" in text
    assert "| makespan / bound | 1.080 | 1.300 | n/a | 1.010 |" in text
    assert "30 x 16 s, 10 at once, 60 / 60 s |" in text


def _first_run(seconds: float, ratio: float, reads: int) -> dict[str, Any]:
    return {
        "job_real_seconds": seconds,
        "run_state": "success",
        "ratio": ratio,
        "status_requests_per_job": reads / 30,
        "first_wave_status_requests": reads - 2,
        "http_429": 0,
        "duplicate_submissions": 0,
        "missing_files": 1 if seconds == 18.0 else 0,
    }


def test_first_runs_keep_the_median_and_the_worst_of_each_duration() -> None:
    runs = [_first_run(14.0, 1.03, 12), _first_run(16.0, 1.01, 13), _first_run(18.0, 1.02, 15)]
    found = summarize(runs, settings=BatchSettings(prompts=30, time_scale=0.25, job_seconds=64.0))
    assert (found["median_ratio"], found["max_ratio"]) == (1.02, 1.03)
    assert (found["median_status_requests_per_job"], found["max_status_requests_per_job"]) == (13 / 30, 0.5)
    assert found["missing_files"] == 1
    doc = _doc()
    doc["throughput"]["first_runs"] = found
    goals = _goals(doc)
    assert goals["throughput.first_runs.median_ratio"]["met"] is True
    assert goals["throughput.first_runs.max_status_requests_per_job"]["met"] is False  # 15 of 30 reads
    assert goals["throughput.first_runs.missing_files"]["met"] is False
    doc["goals"] = evaluate_goals(doc)
    text = markdown(doc)
    assert "| 14 | 1.030 | 0.40 | 10 |" in text
    assert "| worst | 1.030 | 0.50 | |" in text


def test_a_first_run_that_did_not_succeed_leaves_the_medians_unmeasured() -> None:
    runs = [_first_run(14.0, 1.03, 12), {"job_real_seconds": 16.0, "run_state": "error: RuntimeError()"}]
    found = summarize(runs, settings=BatchSettings(prompts=30, time_scale=0.25, job_seconds=64.0))
    assert found["runs_succeeded"] == 1
    assert found["median_ratio"] is found["max_status_requests_per_job"] is found["missing_files"] is None
    doc = _doc()
    doc["throughput"]["first_runs"] = found
    assert _goals(doc)["throughput.first_runs.median_ratio"]["met"] is not True
    doc["goals"] = evaluate_goals(doc)
    assert "| 16 | n/a | n/a | n/a |" in markdown(doc)
