"""FluxGenerateOperator in ``dag.test()`` against a misbehaving emulator: stale 429 resets, an outage
while it waits, and a key rotated while it waits. Both modes; each image submitted once."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.client import DoitongClient, ImageRequest
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from doitong_emulator import DoitongEmulator, FaultConfig
from doitong_emulator.pytest_plugin import EmulatorFactory
from tests.conftest import run_dag, task_states

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


MODES = pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
_ids = itertools.count()


def _dag(**op_kwargs: Any) -> DAG:
    with DAG(
        f"doitong_wait_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False
    ) as dag:
        FluxGenerateOperator(task_id="generate", width=256, height=256, poll_interval=0.1, **op_kwargs)
    return dag


def _use_key(monkeypatch: pytest.MonkeyPatch, emu: DoitongEmulator, key: str) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DOITONG_DEFAULT",
        json.dumps({"conn_type": "doitong", "host": emu.base_url, "password": key}),
    )


def _when(predicate: Callable[[], bool], then: Callable[[], None], timeout: float = 60) -> threading.Thread:
    """Run ``then`` in a thread as soon as ``predicate`` holds."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        then()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def slow_emulator(doitong_emulators: EmulatorFactory) -> Iterator[DoitongEmulator]:
    """A 12-second rate-limit window and 8-second jobs."""
    with doitong_emulators(plan="pro", time_scale=0.2, job_seconds=40, credits=100_000) as emu:
        yield emu


@MODES
def test_a_stale_reset_gives_a_handful_of_429s_not_a_storm(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str], deferrable: bool
) -> None:
    """The account's one job slot stays busy, and every 429 says its reset is already past."""
    with DoitongEmulator(plan="pro", time_scale=0.2, concurrent_jobs=1) as emu:
        _use_key(monkeypatch, emu, emu.api_key)
        emu.set_faults(FaultConfig(stuck_job_rate=1.0))
        with DoitongClient(base_url=emu.base_url, api_key=emu.api_key) as client:
            client.submit(ImageRequest(provider="flux-krea", prompt="the busy slot", width=256, height=256))
        emu.set_faults(FaultConfig(stale_reset_s=300))
        run = run_dag(_dag(prompt="never gets a slot", deferrable=deferrable, timeout=20))
        stats = emu.stats()
        refused = [e["t"] for e in emu.request_log() if e["status"] == 429]
    assert task_states(run) == {"generate": "failed"}
    assert "refuses the submission past the task's deadline" in capfd.readouterr().out
    assert stats["submissions_by_prompt"] == {"the busy slot": 1}
    # Floors of 0.5, 1, 2, 4, 8 and 16 s: a handful of refusals per 12-s rate-limit window, where
    # resubmitting at the stale reset made hundreds a second. (dag.test() resumes a deferral without
    # its kwargs, so in deferrable mode the deadline restarts and one more refusal fits.)
    window = 60 * 0.2
    per_window = max(sum(1 for t in refused if start <= t < start + window) for start in refused)
    assert len(refused) >= 3 and per_window <= 5 and len(refused) <= 7, refused


@MODES
def test_an_outage_while_waiting_is_waited_out(
    doitong_conn: DoitongEmulator, tmp_path: Any, deferrable: bool
) -> None:
    emu = doitong_conn
    emu.set_faults(FaultConfig(stuck_job_rate=0.0))

    def submitted() -> bool:
        return bool(emu.stats()["submissions_by_prompt"])

    _when(submitted, lambda: emu.set_faults(FaultConfig(outage_s=4.0, outage_drop_rate=0.5, seed=3)))
    run = run_dag(
        _dag(prompt="through the outage", deferrable=deferrable, timeout=60, output_path=f"{tmp_path}/")
    )
    assert task_states(run) == {"generate": "success"}
    stats = emu.stats()
    assert stats["submissions_by_prompt"] == {"through the outage": 1}
    assert stats["http_5xx"] + stats["dropped"] >= 2, stats
    assert len(list(tmp_path.glob("*.jpg"))) == 1


@MODES
def test_a_key_rotated_while_waiting_is_read_again(
    slow_emulator: DoitongEmulator, monkeypatch: pytest.MonkeyPatch, deferrable: bool
) -> None:
    emu = slow_emulator
    _use_key(monkeypatch, emu, emu.api_key)
    new_key = f"rotated-{next(_ids)}-0123456789"

    def rotate() -> None:
        _use_key(monkeypatch, emu, new_key)  # the connection first, then the old key goes
        emu.rotate_key(new_key, old_key_valid_for=0.0)

    _when(lambda: bool(emu.stats()["submissions_by_prompt"]), lambda: (time.sleep(1.0), rotate()))
    run = run_dag(_dag(prompt="a rotated key", deferrable=deferrable, timeout=60))
    assert task_states(run) == {"generate": "success"}
    assert emu.stats()["submissions_by_prompt"] == {"a rotated key": 1}
    assert 401 in [entry["status"] for entry in emu.request_log()]  # the old key was refused, then replaced
