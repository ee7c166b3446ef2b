"""FluxBatchOperator in ``dag.test()``: a key rotated while the batch's jobs run is read again in the
worker, as the single-image operator does, and the batch ends with every image (each submitted once)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.operators.batch import FluxBatchOperator
from doitong_emulator import DoitongEmulator
from tests.conftest import run_dag, task_states

pytestmark = pytest.mark.integration  # emulators and Airflow runs of its own

PROMPTS = [f"a rotated key, study {n}" for n in range(3)]


@pytest.fixture
def slow_emulator() -> Iterator[DoitongEmulator]:
    """4-second jobs: the key is rotated while they run."""
    with DoitongEmulator(plan="pro", time_scale=0.1, job_seconds=40, credits=100_000) as emu:
        yield emu


def _use_key(monkeypatch: pytest.MonkeyPatch, emu: DoitongEmulator, key: str) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DOITONG_DEFAULT",
        json.dumps({"conn_type": "doitong", "host": emu.base_url, "password": key}),
    )


def test_a_key_rotated_while_the_jobs_run_is_read_again_in_the_worker(
    slow_emulator: DoitongEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    emu = slow_emulator
    _use_key(monkeypatch, emu, emu.api_key)
    new_key = "rotated-batch-key-0123456789"

    def rotate_once_all_are_submitted() -> None:
        deadline = time.monotonic() + 60
        while sum(emu.stats()["submissions_by_prompt"].values()) < len(PROMPTS):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        _use_key(monkeypatch, emu, new_key)  # the connection first, then the old key goes
        emu.rotate_key(new_key, old_key_valid_for=0.0)

    threading.Thread(target=rotate_once_all_are_submitted, daemon=True).start()
    with DAG(
        "batch_rotated_key", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False
    ) as dag:
        FluxBatchOperator(
            task_id="batch",
            prompts=PROMPTS,
            output_path=str(tmp_path / "out"),
            width=256,
            height=256,
            poll_interval=0.2,
        )
    run = run_dag(dag)
    assert task_states(run) == {"batch": "success"}
    assert emu.stats()["submissions_by_prompt"] == dict.fromkeys(PROMPTS, 1)
    assert 401 in [entry["status"] for entry in emu.request_log()]  # the old key was refused, then replaced
    assert len(list((tmp_path / "out").glob("*.jpg"))) == len(PROMPTS)
