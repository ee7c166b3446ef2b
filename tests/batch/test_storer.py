"""Storing a batch's images: which download failures fail the item at once, from the outcome table.

A fake client stands in for the download (a pure decision path); the ledger and the folder are real.
"""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.batch.lanes import Lanes
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.planner import Limits, Planner
from airflow_provider_doitong.batch.storer import STORE_ATTEMPTS, ImageStorer
from airflow_provider_doitong.batch.stores import LocalLedgerStore
from airflow_provider_doitong.client import (
    DoitongBadImage,
    DoitongConnectionError,
    DoitongDownloadTimeout,
    DoitongDownloadTooLarge,
    DoitongNotFound,
    DoitongServerError,
    DoitongUnauthorized,
    DoitongUntrustedOutput,
    Job,
    JobStatus,
)
from airflow_provider_doitong.client.observability import NO_OBSERVER
from airflow_provider_doitong.storage import storage_path

OWNER = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}


class FailingDownloads:
    """A client whose every download raises ``error``."""

    last_rate_limit = None

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls: list[str] = []  # shared by the copies the download threads use

    @property
    def downloads(self) -> int:
        return len(self.calls)

    def download(self, url: str) -> bytes:
        self.calls.append(url)
        raise self.error

    def get_jobs(self, ids: Any) -> dict[str, Job | None]:
        return {job_id: _job(job_id) for job_id in ids}


def _job(job_id: str) -> Job:
    return Job(
        id=job_id,
        status=JobStatus.COMPLETED,
        raw_status="completed",
        url=f"https://cdn.doitong.com/{job_id}.jpg",
    )


# One row per kind of download failure: does the item fail at the first one?
ROWS: list[tuple[str, BaseException, bool]] = [
    ("unlisted-host", DoitongUntrustedOutput("elsewhere.example is not allowed"), True),
    ("too-large", DoitongDownloadTooLarge("over the cap"), True),
    ("not-an-image", DoitongBadImage("an HTML page"), False),
    ("time-limit", DoitongDownloadTimeout("60 s"), False),
    ("no-answer", DoitongConnectionError("dropped", request_sent=True), False),
    ("cdn-5xx", DoitongServerError("down", status=503), False),
    ("cdn-404", DoitongNotFound("gone", status=404), False),
    ("cdn-401", DoitongUnauthorized("signed URL refused", status=401), False),
]


@pytest.mark.parametrize(("error", "final"), [pytest.param(e, f, id=n) for n, e, f in ROWS])
def test_a_refused_output_fails_the_item_at_once_and_others_are_tried_again(
    error: BaseException, final: bool, tmp_path: Path
) -> None:
    items = build_items(entries_from_list(["a fox"]), ItemDefaults())[0]
    ledger = Ledger.open(LocalLedgerStore(str(tmp_path / "ledger")), items=items, owner=OWNER)
    ledger.update(0, state=ItemState.COMPLETED, job_id="j1", job_ids=["j1"])
    client = FailingDownloads(error)
    storer = ImageStorer(
        items=items,
        ledger=ledger,
        client=client,  # type: ignore[arg-type]
        planner=Planner(
            limits=Limits(concurrency=1, requests_per_window=None, window_s=60.0), poll_interval=1.0
        ),
        folder=storage_path(str(tmp_path / "out")),
        jobs={"j1": _job("j1")},
        log=logging.getLogger(__name__),
        lanes=Lanes(client),  # type: ignore[arg-type]
    )
    storer.store(until=0)
    storer.drain()
    record = ledger.records[0]
    assert record.state is (ItemState.FAILED if final else ItemState.COMPLETED)
    if final:
        assert record.error is not None and record.error.startswith("not stored: ")
        return
    for _ in range(STORE_ATTEMPTS - 1):
        storer.store(until=0)
        storer.drain()
    assert ledger.records[0].state is ItemState.FAILED and client.downloads == STORE_ATTEMPTS


class HeldDownloads:
    """A client whose downloads wait until the test lets them go (or 10 s), counting those at once."""

    last_rate_limit = None
    observer = NO_OBSERVER

    def __init__(self, image: bytes) -> None:
        self.image = image
        self.release = threading.Event()
        self.flight = {"now": 0, "most": 0, "held_to_the_end": 0}  # shared with the threads' copies
        self.lock = threading.Lock()

    def download(self, url: str) -> bytes:
        with self.lock:
            self.flight["now"] += 1
            self.flight["most"] = max(self.flight["most"], self.flight["now"])
        released = self.release.wait(timeout=10)
        with self.lock:
            self.flight["now"] -= 1
            self.flight["held_to_the_end"] += not released
        return self.image

    def get_jobs(self, ids: Any) -> dict[str, Job | None]:
        return {job_id: _job(job_id) for job_id in ids}


def test_downloads_run_beside_the_loop_several_at_once(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "JPEG")
    items = build_items(entries_from_list([f"a fox {n}" for n in range(6)]), ItemDefaults())[0]
    ledger = Ledger.open(LocalLedgerStore(str(tmp_path / "ledger")), items=items, owner=OWNER)
    for n in range(6):
        ledger.update(n, state=ItemState.COMPLETED, job_id=f"j{n}", job_ids=[f"j{n}"])
    client = HeldDownloads(buffer.getvalue())
    lanes = Lanes(client)  # type: ignore[arg-type]
    storer = ImageStorer(
        items=items,
        ledger=ledger,
        client=client,  # type: ignore[arg-type]
        planner=Planner(
            limits=Limits(concurrency=1, requests_per_window=None, window_s=60.0), poll_interval=1.0
        ),
        folder=storage_path(str(tmp_path / "out")),
        jobs={f"j{n}": _job(f"j{n}") for n in range(6)},
        log=logging.getLogger(__name__),
        lanes=lanes,
    )
    storer.store(until=0)  # returns with the downloads still held: the loop is free to go on
    assert ledger.count(ItemState.COMPLETED) == 6 and ledger.count(ItemState.STORED) == 0
    client.release.set()
    storer.drain()
    lanes.close()
    assert client.flight["held_to_the_end"] == 0  # every download was still held when store() returned
    assert client.flight["most"] > 1
    assert ledger.count(ItemState.STORED) == 6
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        f"000{n + 1}-a-fox-{n}.jpg" for n in range(6)
    ]
