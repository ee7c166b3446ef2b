"""``FluxGenerateOperator`` stopped between storing its image and filling the image cache, in real
Airflow (``dag.test()``) against the emulator: its next try fills the cache, paying nothing again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.operators import image_cache
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from airflow_provider_doitong.storage.cache import ImageCache
from tests.conftest import run_dag, task_states, xcom_value

PROMPT = "a lighthouse keeper's cat"
REQUEST = ImageRequest(provider="flux-krea", prompt=PROMPT, width=256, height=256)


def test_a_try_stopped_before_filling_the_cache_leaves_it_to_the_next_try(
    doitong_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill = image_cache.after_store
    calls: list[str] = []

    def stopped_once(*args: Any) -> None:
        calls.append("after_store")
        if len(calls) == 1:
            raise RuntimeError("the worker was lost before filling the cache")
        fill(*args)

    monkeypatch.setattr(image_cache, "after_store", stopped_once)
    with DAG(
        "cache_op_resume", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False
    ) as dag:
        FluxGenerateOperator(
            task_id="generate",
            prompt=PROMPT,
            width=256,
            height=256,
            poll_interval=0.1,
            output_path=f"{tmp_path / 'out'}/",
            cache_path=str(tmp_path / "cache"),
            retries=1,
            retry_delay=timedelta(0),
        )
    run = run_dag(dag)
    assert task_states(run) == {"generate": "success"} and len(calls) == 2
    result = xcom_value(run, "generate")
    submits = [entry for entry in doitong_conn.request_log() if entry["kind"] == "submit"]
    assert len(submits) == 1  # the job of the first try, reused
    entry = ImageCache(str(tmp_path / "cache")).lookup(REQUEST)
    assert entry is not None and entry.job_id == result["job_id"]
    assert entry.data == Path(result["output_path"]).read_bytes()
    assert not list((tmp_path / "cache").rglob("*.claim"))
