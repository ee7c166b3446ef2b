"""Refusals stay under the plan's rate when reset headers are stale: a job slot held by another
client, every 429 naming a reset already past and no ``Retry-After``."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from doitong_emulator import DoitongEmulator, FaultConfig
from doitong_emulator.pytest_plugin import EmulatorFactory
from tests.conftest import run_dag, task_states

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


_ids = itertools.count()
HOLD_S = 8.0


@pytest.fixture
def free_plan(
    monkeypatch: pytest.MonkeyPatch, doitong_emulators: EmulatorFactory
) -> Iterator[DoitongEmulator]:
    """The free plan (10 requests a minute, one job at a time) in real time, 1 s jobs."""
    with doitong_emulators(plan="free", time_scale=1.0, job_seconds=1, credits=10_000) as emu:
        conn = {
            "conn_type": "doitong",
            "host": emu.base_url,
            "password": emu.api_key,
            "extra": {"plan": "free"},
        }
        monkeypatch.setenv("AIRFLOW_CONN_DOITONG_DEFAULT", json.dumps(conn))
        yield emu


def _refusals(emu: DoitongEmulator) -> list[float]:
    return [e["t"] for e in emu.request_log() if e["status"] == 429]


@pytest.mark.parametrize("operator", ["generate", "batch"])
def test_refusals_stay_under_the_plan_rate(free_plan: DoitongEmulator, tmp_path: Path, operator: str) -> None:
    free_plan.set_faults(FaultConfig(hold_slot_s=HOLD_S, stale_reset_s=30))
    with DAG(f"stale_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:
        kwargs: dict[str, Any] = {"task_id": "task", "width": 256, "height": 256, "poll_interval": 1.0}
        if operator == "generate":
            FluxGenerateOperator(prompt="a lighthouse", output_path=f"{tmp_path}/", **kwargs)
        else:
            FluxBatchOperator(prompts=["a lighthouse"], output_path=str(tmp_path / "b"), **kwargs)
    run = run_dag(dag)
    assert task_states(run) == {"task": "success"}
    refused = _refusals(free_plan)
    assert refused, free_plan.request_log()
    # The free plan allows 10 requests a minute: the refusals of one client stay well under that.
    span = max(refused) - min(refused)
    assert len(refused) <= 1 + span / 6.0, (len(refused), span)
