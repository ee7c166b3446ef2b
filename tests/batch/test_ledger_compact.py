"""A ledger of a million items: pending items cost their keys, not a record each, and ledgers
written in the earlier form (a record for every item) are still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_doitong.batch.budget import item_estimates
from airflow_provider_doitong.batch.items import (
    BatchItem,
    ItemDefaults,
    ItemList,
    build_items,
    entries_from_list,
    entries_from_text,
)
from airflow_provider_doitong.batch.ledger import ItemState, Ledger, LedgerError, summary_counts
from airflow_provider_doitong.batch.stores import JOURNAL_NAME, SNAPSHOT_NAME, LocalLedgerStore

OWNER = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}


def items(prompts: list[str]) -> list:
    return build_items(entries_from_list(prompts), ItemDefaults())[0]


def test_a_new_ledger_of_pending_items_holds_no_record_per_item(tmp_path: Path) -> None:
    many = 3000
    batch = items([f"a fox number {n}" for n in range(many)])
    ledger = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert len(ledger._records) == 0
    assert ledger.count(ItemState.PENDING) == many and ledger.in_state(ItemState.PENDING) == list(range(many))
    ledger.set_meta(started=True)
    ledger.flush()
    snapshot = (tmp_path / SNAPSHOT_NAME).read_text()
    # the keys once (12 hex digits an item), no record per item: the earlier form took ~45 bytes an item
    assert len(snapshot) < 13 * many + 1_000 and json.loads(snapshot)["items"] == []
    ledger.close()

    again = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert len(again._records) == 0
    again.update(7, state=ItemState.RUNNING, job_id="j7")
    again.update(9, failures=1, error="boom")  # still pending, but changed: recorded
    assert len(again._records) == 2
    assert again.count(ItemState.PENDING) == many - 1 and 7 not in again.in_state(ItemState.PENDING)
    assert again.in_state(ItemState.RUNNING) == [7]
    assert summary_counts(again)["pending"] == many - 1 == summary_counts(list(again))["pending"]
    assert [record.key for record in again] == [item.fingerprint for item in batch]
    assert again.records[12].key == batch[12].fingerprint and again.records[-1].index == many - 1
    again._write_snapshot()
    again.close()
    doc = json.loads((tmp_path / SNAPSHOT_NAME).read_text())
    assert [entry["index"] for entry in doc["items"]] == [7, 9]
    third = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert third.records[7].job_id == "j7" and third.records[9].error == "boom"
    assert third.records[9].state is ItemState.PENDING and third.count(ItemState.PENDING) == many - 1


def test_other_prompts_are_refused_naming_the_first_that_differs(tmp_path: Path) -> None:
    prompts = [f"a tram {n}" for n in range(2000)]
    ledger = Ledger.open(LocalLedgerStore(str(tmp_path)), items=items(prompts), owner=OWNER)
    ledger.set_meta(started=True)
    ledger.flush()
    ledger.close()
    prompts[1500] = "a different tram"
    with pytest.raises(LedgerError, match=r"other prompts \(item 1501, "):
        Ledger.open(LocalLedgerStore(str(tmp_path)), items=items(prompts), owner=OWNER)


def test_keys_of_another_form_are_kept_as_they_are(tmp_path: Path) -> None:
    request = items(["a crane"])[0].request
    batch = [BatchItem(index=n, request=request, source=f"item {n}", key=f"key-{n}") for n in range(3)]
    ledger = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    ledger.set_meta(started=True)
    ledger.flush()
    ledger.close()
    again = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert [record.key for record in again] == ["key-0", "key-1", "key-2"]
    with pytest.raises(LedgerError, match="item 2"):
        again.check_items([batch[0], BatchItem(index=1, request=request, source="item 1", key="x"), batch[2]])


# Written by the earlier ledger (a record for every item, version 1): four items, one stored, one
# running, one pending after a failure (in the journal).
EARLIER_SNAPSHOT = (
    '{"format":"doitong-batch-ledger","version":1,"seq":2,"meta":{"owner":{"dag_id":"d","run_id":"r",'
    '"task_id":"t","map_index":-1},"items":4,"started":true},"items":[{"index":0,"key":"5af14641c4c1",'
    '"state":"pending"},{"index":1,"key":"aed4ce821cdf","state":"stored","attempts":1,"job_id":"j1",'
    '"job_ids":["j1"],"credits":4,"file":"0002-a-tram.jpg","sha256":"ab","bytes":3},{"index":2,'
    '"key":"7fb768ca79f3","state":"pending"},{"index":3,"key":"9c01e79f9835","state":"pending"}]}'
)
EARLIER_JOURNAL = (
    '{"q":3,"i":2,"set":{"state":"running","attempts":1,"job_id":"j2","job_ids":["j2"],"submitted_at":5.5}}\n'
    '{"q":4,"i":3,"set":{"state":"pending","failures":1,"error":"boom"}}\n'
)


def test_a_ledger_of_the_earlier_form_is_read_and_rewritten_in_the_compact_one(tmp_path: Path) -> None:
    (tmp_path / SNAPSHOT_NAME).write_text(EARLIER_SNAPSHOT)
    (tmp_path / JOURNAL_NAME).write_text(EARLIER_JOURNAL)
    batch = items(["a fox", "a tram", "a crane", "a lighthouse"])
    ledger = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)

    def check(ledger: Ledger) -> None:
        assert [record.state.value for record in ledger] == ["pending", "stored", "running", "pending"]
        assert ledger.records[1].file == "0002-a-tram.jpg" and ledger.records[1].credits == 4
        assert ledger.records[2].job_ids == ["j2"] and ledger.records[2].submitted_at == 5.5
        assert ledger.records[3].failures == 1 and ledger.records[3].error == "boom"
        assert ledger.in_state(ItemState.PENDING) == [0, 3] and ledger.meta["started"] is True

    check(ledger)
    assert sorted(ledger._records) == [1, 2, 3]  # the pristine item 0 kept no record
    ledger._write_snapshot()
    ledger.close()
    doc = json.loads((tmp_path / SNAPSHOT_NAME).read_text())
    assert doc["version"] == 2 and doc["keys"] == "".join(item.fingerprint for item in batch)
    check(Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER))


def test_the_estimates_of_a_compact_list_are_those_of_its_items() -> None:
    lines = [
        json.dumps(
            {
                "prompt": f"a fox {n}",
                **({"width": 768} if n % 3 else {}),
                **({"quality": "high"} if n % 2 else {}),
            }
        )
        for n in range(12)
    ]

    batch = build_items(entries_from_text("\n".join(lines), jsonl=True), ItemDefaults())[0]
    assert list(item_estimates(batch)) == [item.request.estimated_credits for item in batch]
    assert len(set(item_estimates(batch))) > 1


def test_saved_items_are_written_as_json_writes_each_row() -> None:
    # the saved items' lines are made without a list per row: the same text json.dumps gives
    prompts = ['a fox "quoted" \\ back', "été à Paris \u2603", "日本語のプロンプト", "x" * 50]
    found = ItemList()
    for n in range(20):
        source = f"line {n}" if n % 4 else (f"item {n}" if n % 3 else "odd source \u00e9 07")
        found.append_saved(
            f"{n:012x}",
            source,
            prompts[n % 4] + str(n),
            "flux-krea" if n % 2 else "flux-dev",
            1024 if n % 3 else 768,
            1024,
            "high" if n % 5 else "standard",
            None if n % 2 else "flux-dev",
        )
    rows = list(found.rows())
    assert found.rows_json(3, 17) == json.dumps(rows[3:17], separators=(",", ":"))
    assert found.rows_json(0, 20) == json.dumps(rows, separators=(",", ":"))
    assert len({row[3] for row in rows}) == 2 and any(row[1] == "odd source \u00e9 07" for row in rows)
