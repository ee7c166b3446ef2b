"""A batch's status reads in the worker fail by the rule the sync wait and the triggerer follow.

The client's own retry policy paces the retries, and a refused key is read again once from the
connection (a rotated key). Real HTTP to the emulator; the ledger is real.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.planner import Limits, Planner
from airflow_provider_doitong.batch.reader import JobReader
from airflow_provider_doitong.batch.stores import LocalLedgerStore
from airflow_provider_doitong.client import DoitongClient, DoitongUnauthorized, RetryPolicy
from airflow_provider_doitong.client.board import WindowBoard
from doitong_emulator import FaultConfig

OWNER = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}
ONE_TRY = RetryPolicy(max_attempts=1, backoff_base=0.01, backoff_max=0.02, max_rate_limit_wait=0)


class Batch:
    """One running item, its ledger, a planner and a reader over a real client."""

    def __init__(self, emu: Any, tmp_path: Path, policy: RetryPolicy, refresh_key: Any = None) -> None:
        items = build_items(entries_from_list(["a fox"]), ItemDefaults(width=256, height=256))[0]
        self.client = DoitongClient(api_key=emu.api_key, base_url=emu.base_url, retry_policy=policy)
        job = self.client.submit(items[0].request)
        self.ledger = Ledger.open(LocalLedgerStore(str(tmp_path / "ledger")), items=items, owner=OWNER)
        self.ledger.update(
            0, state=ItemState.RUNNING, job_id=job.id, job_ids=[job.id], submitted_at=time.time()
        )
        self.planner = Planner(
            limits=Limits(concurrency=1, requests_per_window=None, window_s=60.0), poll_interval=1.0
        )
        self.failed: list[str] = []
        self.reader = JobReader(
            ledger=self.ledger,
            client=self.client,
            planner=self.planner,
            jobs={},
            job_failed=lambda index, why: self.failed.append(why),
            log=logging.getLogger(__name__),
            refresh_key=refresh_key,
        )

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def batches(emulator: Any, tmp_path: Path) -> Iterator[Any]:
    made: list[Batch] = []

    def make(policy: RetryPolicy = ONE_TRY, refresh_key: Any = None) -> Batch:
        batch = Batch(emulator, tmp_path / str(len(made)), policy, refresh_key)
        made.append(batch)
        return batch

    yield make
    for batch in made:
        batch.close()


def test_a_rotated_key_is_read_again_in_the_worker(emulator: Any, batches: Any) -> None:
    batch = batches(refresh_key=lambda: "rotated-key")
    emulator.rotate_key("rotated-key")
    assert batch.reader.poll() is None  # refused: the connection is read again, not the batch ended
    assert batch.planner.poll_now, "the next read comes at once, with the key just read"
    assert batch.reader.poll() is None
    assert batch.planner.last_poll_at > 0 and not batch.failed


def test_a_second_refusal_in_a_row_ends_the_batch(emulator: Any, batches: Any) -> None:
    batch = batches(refresh_key=lambda: "still-the-old-key")
    emulator.rotate_key("rotated-key")
    assert batch.reader.poll() is None
    assert isinstance(batch.reader.poll(), DoitongUnauthorized)


def test_a_refused_read_waits_by_the_clients_own_retry_policy(emulator: Any, batches: Any) -> None:
    """The backoff after a 429 on a status read is the client's (here at least 30 s), not a default."""
    batch = batches(
        policy=RetryPolicy(max_attempts=1, backoff_base=30.0, backoff_max=30.0, max_rate_limit_wait=0)
    )
    emulator.set_faults(FaultConfig(error_429_rate=1.0))
    before = time.time()
    assert batch.reader.poll() is None
    assert batch.planner.requests_blocked_until - before >= 30.0
    assert batch.planner.available_requests(time.time()) == 0  # every request waits, submissions too


def test_a_read_held_for_a_window_seen_spent_waits_for_its_reset_and_is_no_failure(
    emulator: Any, batches: Any, tmp_path: Path
) -> None:
    """Backoff 30 s as above: a hold waits for the reset it was held for, exactly, and counts nothing."""
    batch = batches(
        policy=RetryPolicy(max_attempts=1, backoff_base=30.0, backoff_max=30.0, max_rate_limit_wait=0)
    )
    board = WindowBoard.for_account(base_url=emulator.base_url, api_key=emulator.api_key, directory=tmp_path)
    assert board is not None
    batch.client.board = board
    before = time.time()
    board.post(before + 5.0, before)  # another process saw the window spent
    assert batch.reader.poll() is None
    assert before + 5.0 <= batch.planner.requests_blocked_until < before + 6.0
    assert batch.reader._failures == 0 and not batch.failed
    assert [e["kind"] for e in emulator.request_log()] == ["submit"]  # the read was never sent
