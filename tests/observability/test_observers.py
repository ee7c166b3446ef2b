"""The Airflow adapter's tags and spans, and what both operators report, in real Airflow (``dag.test()``)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from airflow_provider_doitong.client import DoitongInsufficientCredits, DoitongRateLimited
from airflow_provider_doitong.client import observability as obs
from airflow_provider_doitong.hooks import doitong as hook_module
from airflow_provider_doitong.hooks.observers import AirflowObserver, observer_for
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from doitong_emulator import FaultConfig
from tests.conftest import run_dag, task_states, xcom_value
from tests.observability.recorder import RecordingObserver

_ids = itertools.count()


class RecordingStats:
    """Airflow's ``Stats`` calls, as made."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, dict[str, str]]] = []

    def incr(self, stat: str, count: int = 1, rate: float = 1, *, tags: dict[str, str]) -> None:
        self.calls.append(("incr", stat, count, tags))

    def timing(self, stat: str, dt: float, *, tags: dict[str, str]) -> None:
        self.calls.append(("timing", stat, dt, tags))


# --- pure: tags, kinds, spans -------------------------------------------------------------------------
def test_tags_name_the_dag_task_connection_model_and_kind_only() -> None:
    stats = RecordingStats()
    observer = AirflowObserver(conn_id="doitong_default", dag_id="nightly", task_id="render", stats=stats)
    observer.count(obs.JOBS_REFUSED, model="flux-dev", kind="rate_limited")
    observer.timing(obs.JOB_TURNAROUND, 1.5, model="flux-dev")
    assert stats.calls == [
        (
            "incr",
            "doitong.jobs.refused",
            1,
            {
                "dag_id": "nightly",
                "task_id": "render",
                "conn_id": "doitong_default",
                "model": "flux-dev",
                "kind": "rate_limited",
            },
        ),
        (
            "timing",
            "doitong.job.turnaround",
            1500.0,
            {"dag_id": "nightly", "task_id": "render", "conn_id": "doitong_default", "model": "flux-dev"},
        ),
    ]


def test_outside_a_task_the_tags_name_the_connection_only() -> None:
    assert observer_for("doitong_default").tags() == {"conn_id": "doitong_default"}


def test_a_failing_metrics_backend_never_fails_the_caller() -> None:
    class Broken:
        def incr(self, *args: Any, **kwargs: Any) -> None:
            raise OSError("no route to the StatsD host")

        timing = incr

    observer = AirflowObserver(conn_id="c", stats=Broken())
    observer.count(obs.JOBS_SUBMITTED)
    observer.timing(obs.JOB_TURNAROUND, 1.0)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (DoitongRateLimited("slow down, key sk-live-123"), "rate_limited"),
        (DoitongInsufficientCredits("balance of key sk-live-123 too low"), "insufficient_credits"),
        (ValueError("sk-live-123"), "value_error"),
    ],
)
def test_a_refusal_kind_is_the_class_never_the_message(error: BaseException, kind: str) -> None:
    assert obs.refusal_kind(error) == kind


def test_one_span_per_job_under_the_current_span_with_its_charge_and_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr("airflow_provider_doitong.hooks.observers.trace.get_tracer", provider.get_tracer)
    observer = AirflowObserver(
        conn_id="doitong_default", dag_id="nightly", task_id="render", stats=RecordingStats()
    )
    trace = obs.JobTrace(
        job_id="job-7",
        model="flux-krea",
        credits=20,
        submitted_at=100.0,
        ended_at=130.0,
        stored_at=131.5,
        item=3,
        events=(("downloaded", 131.0),),
    )
    with provider.get_tracer("test").start_as_current_span("task") as task:
        observer.job_stored(trace)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "doitong.job"]
    assert span.parent is not None and span.parent.span_id == task.get_span_context().span_id
    assert dict(span.attributes or {}) == {
        "doitong.job_id": "job-7",
        "doitong.model": "flux-krea",
        "doitong.credits_charged": 20,
        "doitong.item": 3,
        "airflow.dag_id": "nightly",
        "airflow.task_id": "render",
        "doitong.conn_id": "doitong_default",
    }
    assert (span.start_time, span.end_time) == (100_000_000_000, 131_500_000_000)
    assert [(e.name, e.timestamp) for e in span.events] == [
        ("submitted", 100_000_000_000),
        ("completed", 130_000_000_000),
        ("downloaded", 131_000_000_000),
        ("stored", 131_500_000_000),
    ]


def test_without_a_tracer_provider_a_job_span_is_a_no_op() -> None:
    trace = obs.JobTrace(
        job_id="j", model="flux-dev", credits=None, submitted_at=1.0, ended_at=None, stored_at=2.0
    )
    AirflowObserver(conn_id="c", stats=RecordingStats()).job_stored(trace)


# --- both operators, in real Airflow ----------------------------------------------------------------
@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> RecordingObserver:
    """Every client the hook makes reports to one recorder."""
    recorder = RecordingObserver()
    monkeypatch.setattr(hook_module, "observer_for", lambda conn_id: recorder)
    return recorder


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_the_single_image_reports_its_job_and_stored_image(
    doitong_conn: Any, seen: RecordingObserver, tmp_path: Path, deferrable: bool
) -> None:
    with DAG(f"doitong_obs_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:
        FluxGenerateOperator(
            task_id="generate",
            prompt="a lighthouse at dawn",
            width=512,
            height=512,
            poll_interval=0.1,
            deferrable=deferrable,
            output_path=f"{tmp_path}/",
        )
    run = run_dag(dag)
    assert task_states(run) == {"generate": "success"}
    result = xcom_value(run, "generate")
    size = Path(result["output_path"]).stat().st_size
    assert {key: value for key, value in seen.counts.items() if key[0] != obs.STATUS_REQUESTS} == {
        (obs.JOBS_SUBMITTED, "flux-krea", None): 1,
        (obs.CREDITS_ESTIMATED, "flux-krea", None): 10,
        (obs.JOBS_COMPLETED, "flux-krea", None): 1,
        (obs.CREDITS_CHARGED, "flux-krea", None): result["credit_cost"],
        (obs.IMAGES_STORED, "flux-krea", None): 1,
        (obs.IMAGES_BYTES, "flux-krea", None): size,
    }
    assert seen.total(obs.STATUS_REQUESTS) == doitong_conn.stats()["requests"]["status"]
    assert [t.job_id for t in seen.traces] == [result["job_id"]] and seen.traces[0].credits == result[
        "credit_cost"
    ]
    assert set(seen.timings) == {obs.JOB_TURNAROUND, obs.JOB_END_TO_STORED}


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_failed_job_is_counted_by_both_operators(
    doitong_conn: Any, seen: RecordingObserver, tmp_path: Path, deferrable: bool
) -> None:
    doitong_conn.set_faults(FaultConfig(fail_job_rate=1.0))
    with DAG(f"doitong_obs_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:
        FluxGenerateOperator(
            task_id="generate", prompt="a storm", poll_interval=0.1, deferrable=deferrable, retries=0
        )
        FluxBatchOperator(
            task_id="batch",
            prompts=["a storm", "a gale"],
            output_path=str(tmp_path / "out"),
            poll_interval=0.1,
            deferrable=deferrable,
            min_defer_seconds=0,
            item_retries=0,
        )
    run = run_dag(dag)
    assert task_states(run) == {"generate": "failed", "batch": "failed"}
    assert seen.counts[(obs.JOBS_FAILED, "flux-krea", None)] == 3
    assert (
        seen.total(obs.JOBS_COMPLETED)
        == seen.total(obs.CREDITS_CHARGED)
        == seen.total(obs.IMAGES_STORED)
        == 0
    )
