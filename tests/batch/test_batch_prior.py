"""A batch's second run reads its first wave at the durations its first run saw (``dag.test()``).

The first run leaves a summary of its jobs' durations in its result (XCom); the second run of the
same task reads it with ``include_prior_dates`` and reads its jobs at their expected end instead of
probing them. Status reads are counted from the emulator's request log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.batch import prior
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from tests.conftest import conn_json, run_dag, task_states, xcom_value

PROMPTS = [f"a paper boat at dusk, study {n}" for n in range(10)]  # one wave of the pro plan's 10 slots


def nightly(folder: Path, **kwargs: Any) -> DAG:
    with DAG("nightly_batch", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False) as dag:
        FluxBatchOperator(
            task_id="batch",
            prompts=PROMPTS,
            output_path=str(folder),
            width=256,
            height=256,
            poll_interval=30.0,
            **kwargs,
        )
    return dag


def status_reads(emu: Any, since: int) -> int:
    return sum(1 for e in emu.request_log()[since:] if e["kind"] == "status")


@pytest.fixture
def slow_jobs(doitong_emulators: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Jobs of 6 s real: long enough for the probing of a first wave to show."""
    with doitong_emulators(plan="pro", time_scale=0.3, job_seconds=20, credits=100_000) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_DOITONG_DEFAULT", conn_json(emu))
        yield emu


def test_a_second_run_reads_its_first_wave_at_the_durations_the_first_saw(
    slow_jobs: Any, tmp_path: Path
) -> None:
    first = run_dag(nightly(tmp_path / "night-1"))
    assert task_states(first) == {"batch": "success"}
    summary = xcom_value(first, "batch")[prior.SUMMARY_KEY]
    assert summary["model"] == "flux-krea" and summary["jobs"] == len(PROMPTS)
    assert 5.0 <= summary["p50"] <= 7.0
    first_reads = status_reads(slow_jobs, 0)
    since = len(slow_jobs.request_log())

    second = run_dag(nightly(tmp_path / "night-2"))
    assert task_states(second) == {"batch": "success"}
    second_reads = status_reads(slow_jobs, since)
    print(f"status reads of the first wave: first run {first_reads}, second run {second_reads}")
    assert first_reads >= 4  # probed at growing intervals until the first end
    assert second_reads <= 2 < first_reads, (first_reads, second_reads)
    assert slow_jobs.stats()["submissions_by_prompt"] == {p: 2 for p in PROMPTS}  # one job a night each


def test_another_size_ignores_the_earlier_runs_durations(slow_jobs: Any, tmp_path: Path) -> None:
    run_dag(nightly(tmp_path / "night-1"))
    first_reads = status_reads(slow_jobs, 0)
    since = len(slow_jobs.request_log())
    second = run_dag(nightly(tmp_path / "night-2", quality="high"))
    assert task_states(second) == {"batch": "success"}
    assert status_reads(slow_jobs, since) >= first_reads - 1  # probed again: no prior for these jobs
