"""A batch's manifest written from its ledger an entry at a time: the very document and page the
whole-document API makes, never all its entries at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.batch import ledger_manifest, manifest
from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.batch.ledger import ItemRecord, ItemState
from airflow_provider_doitong.client.redaction import redact

SECRET = "sk-live-0123456789"


def records(count: int) -> list[ItemRecord]:
    states = [ItemState.STORED, ItemState.FAILED, ItemState.PENDING, ItemState.RUNNING]
    out = []
    for index in range(count):
        state = states[index % len(states)]
        stored = state is ItemState.STORED
        out.append(
            ItemRecord(
                index=index,
                key=f"{index:012x}",
                state=state,
                job_id=f"job-{index}" if state is not ItemState.PENDING else None,
                job_ids=[f"job-{index}"] * (2 if index == 5 else 1),
                credits=10 if stored else None,
                file=f"{index + 1:04d}-a-fox.jpg" if stored else None,
                sha256="ab" * 32 if stored else None,
                bytes=1234 if stored else None,
                error=f"refused: {SECRET}" if state is ItemState.FAILED else None,
                ambiguous=1 if index == 5 else 0,
            )
        )
    return out


@pytest.mark.parametrize("count", [0, 1, 7, ledger_manifest.CHUNK_ENTRIES * 2 + 3])
def test_the_streamed_manifest_is_the_whole_documents(tmp_path: Path, count: int) -> None:
    items, _ = build_items(entries_from_list([f"a fox, take {n} «ü»" for n in range(count)]), ItemDefaults())
    kept = records(count)
    whole, streamed = tmp_path / "whole", tmp_path / "streamed"
    whole.mkdir()
    streamed.mkdir()
    source = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}
    extra = {"unsubmitted": 2, "stopped": "max_credits"}
    doc = manifest.build_manifest(
        manifest.entries_from_ledger(items, kept),
        title="d / t, run r",
        credits_estimated=99,
        source=source,
        extra=extra,
    )
    manifest.write_manifest(str(whole), redact(doc, [SECRET]))
    written = ledger_manifest.write_ledger_manifest(
        str(streamed),
        items,
        kept,
        title="d / t, run r",
        credits_estimated=99,
        source=source,
        extra=extra,
        clean=lambda value: redact(value, [SECRET]),
    )
    expected = json.loads((whole / "manifest.json").read_text())
    got = json.loads((streamed / "manifest.json").read_text())
    expected.pop("generated_at"), got.pop("generated_at")
    assert got == expected and list(got) == list(expected)
    assert SECRET not in (streamed / "manifest.json").read_text()
    assert (streamed / "index.html").read_text() == (whole / "index.html").read_text()
    assert written["item_count"] == count == got["item_count"]
    assert written["image_count"] == got["image_count"] and written["credits_spent"] == got["credits_spent"]
    assert written["manifest"] == str(streamed / "manifest.json")
    assert manifest.verify_manifest(str(streamed)) == manifest.verify_manifest(str(whole))


def test_entries_are_made_and_written_a_chunk_at_a_time(tmp_path: Path) -> None:
    count = ledger_manifest.CHUNK_ENTRIES * 3
    items, _ = build_items(entries_from_list([f"a fox, take {n}" for n in range(count)]), ItemDefaults())
    kept = records(count)
    made = 0

    def clean(value: object) -> object:
        nonlocal made
        if isinstance(value, dict) and "number" in value:
            made += 1
        return value

    seen_chunks: list[int] = []
    original = ledger_manifest.json_chunks

    def chunks(head: object, entries: Iterator[object]) -> Iterator[bytes]:
        for chunk in original(head, entries):  # type: ignore[arg-type]
            seen_chunks.append(made)
            yield chunk

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ledger_manifest, "json_chunks", chunks)
        ledger_manifest.write_ledger_manifest(
            str(tmp_path), items, kept, title="t", credits_estimated=None, source={}, clean=clean
        )
    # the file was written while its entries were still being made, a chunk's worth ahead at most
    assert len(seen_chunks) > 3 and seen_chunks[1] <= ledger_manifest.CHUNK_ENTRIES + 1
    assert made == 2 * count  # the manifest and the page, each from entries made for it


def test_the_progress_snapshot_is_the_whole_snapshot_written_a_chunk_at_a_time(tmp_path: Path) -> None:
    from airflow_provider_doitong.batch import progress
    from airflow_provider_doitong.batch.ledger import Ledger
    from airflow_provider_doitong.batch.stores import LocalLedgerStore

    owner = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}
    count = ledger_manifest.CHUNK_ENTRIES * 2 + 5
    items, _ = build_items(entries_from_list([f"a fox, take {n}" for n in range(count)]), ItemDefaults())
    store = LocalLedgerStore(str(progress.snapshot_path(str(tmp_path), owner).parent.path))
    ledger = Ledger.open(store, items=list(items), owner=owner)
    ledger.update(0, state=ItemState.STORED, file="0001-a-fox.jpg", credits=10, job_id="j1")
    ledger.update(1, state=ItemState.RUNNING, job_id="j2")
    chunks: list[int] = []
    original = ledger_manifest.json_chunks

    def counted(head: Any, entries: Any) -> Iterator[bytes]:
        for chunk in original(head, entries):
            chunks.append(len(chunk))
            yield chunk

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(progress, "json_chunks", counted)
        progress.write_snapshot(str(tmp_path), items, ledger)
    got = json.loads(progress.snapshot_path(str(tmp_path), owner).read_text())
    expected = progress.snapshot(items, ledger)
    got.pop("generated_at"), expected.pop("generated_at")
    assert got == expected
    assert len(chunks) == 4  # the head, two chunks of entries, the rest
