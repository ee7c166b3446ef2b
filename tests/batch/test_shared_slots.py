"""Two batches on one account, each with its own client and board of job slots as two processes of one
host would have them (the Airflow-free runner, in two threads), against the emulator."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.planner import Limits, Planner
from airflow_provider_doitong.batch.runner import BatchRunner, Finished
from airflow_provider_doitong.batch.stores import LocalLedgerStore
from airflow_provider_doitong.client import DoitongClient
from airflow_provider_doitong.client import observability as obs
from airflow_provider_doitong.client.contract import PLANS
from airflow_provider_doitong.client.slots import SlotBoard
from airflow_provider_doitong.storage import storage_path
from doitong_emulator.pytest_plugin import EmulatorFactory
from tests.observability.recorder import RecordingObserver
from tests.support.threads import run_together

PLAN = PLANS["starter"]  # 3 jobs at once, 30 requests a minute


def runner_for(emu: Any, tmp_path: Path, name: str, *, slots: SlotBoard | None) -> BatchRunner:
    """A batch as the operator runs it, without Airflow: its own ledger, folder, client and board."""
    prompts = [f"a lighthouse in rain, {name} {n}" for n in range(6)]
    items = build_items(entries_from_list(prompts), ItemDefaults(width=256, height=256))[0]
    owner = {"dag_id": name, "run_id": "r", "task_id": "t", "map_index": -1}
    ledger = Ledger.open(LocalLedgerStore(str(tmp_path / name / "ledger")), items=items, owner=owner)
    client = DoitongClient(
        base_url=emu.base_url, api_key=emu.api_key, slots=slots, observer=RecordingObserver()
    )
    limits = Limits(
        concurrency=PLAN.concurrent_jobs, requests_per_window=PLAN.requests_per_minute, window_s=60.0
    )
    return BatchRunner(
        items=items,
        ledger=ledger,
        client=client,
        planner=Planner(limits=limits, poll_interval=0.2),
        folder=storage_path(str(tmp_path / name / "out")),
        item_retries=1,
        max_failed_items=0,
        logger=logging.getLogger(f"batch.{name}"),
    )


def test_two_batches_telling_each_other_their_jobs_are_never_refused_a_job_slot(
    doitong_emulators: EmulatorFactory, tmp_path: Path
) -> None:
    with doitong_emulators(plan=PLAN.name, time_scale=0.05, job_seconds=10, credits=100_000) as emu:
        boards = [
            SlotBoard.for_account(
                base_url=emu.base_url,
                api_key=emu.api_key,
                concurrency=PLAN.concurrent_jobs,
                directory=tmp_path / "boards",
            )
            for _ in range(2)
        ]
        runners = [runner_for(emu, tmp_path, name, slots=b) for name, b in zip("ab", boards, strict=True)]
        assert run_together(runners) == [Finished(""), Finished("")]
        log = emu.request_log()
    for runner in runners:
        runner.client.close()
        assert runner.ledger.count(ItemState.STORED) == 6
    assert [e for e in log if e["kind"] == "submit" and e["status"] == 429] == []
    assert sum(e["kind"] == "submit" for e in log) == 12  # each image submitted once: nothing refused
    held = sum(r.client.observer.total(obs.REQUESTS_HELD) for r in runners)  # type: ignore[attr-defined]
    assert held > 0  # the slots were full, and it showed before a request was spent on it
