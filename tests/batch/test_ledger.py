"""The ledger: durable across reopenings, never half-written, and never applied to another batch."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_doitong.batch import ledger as ledger_module
from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.batch.ledger import ItemState, Ledger, LedgerError
from airflow_provider_doitong.batch.stores import (
    JOURNAL_NAME,
    LocalLedgerStore,
    ObjectLedgerStore,
    ledger_parts,
    open_store,
)
from airflow_provider_doitong.storage import UnsafeOutputPath, storage_path

OWNER = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}


def items(prompts: list[str]) -> list:
    return build_items(entries_from_list(prompts), ItemDefaults())[0]


def test_changes_survive_a_reopening(tmp_path: Path) -> None:
    batch = items(["a", "b", "c"])
    ledger = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert ledger.count(ItemState.PENDING) == 3
    ledger.set_meta(started=True)
    ledger.flush()
    ledger.update(0, state=ItemState.SUBMITTING, attempts=1)
    ledger.update(0, state=ItemState.RUNNING, job_id="j0", job_ids=["j0"], submitted_at=5.0)
    ledger.update(1, state=ItemState.STORED, file="0002-b.jpg", sha256="ab", bytes=3)
    ledger.set_meta(durations=[16.0])
    ledger.update(2, state=ItemState.SUBMITTING, attempts=1)  # never flushed: a crash loses it
    ledger.flush()
    ledger.update(2, state=ItemState.PENDING)
    ledger.store.close()

    again = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert again.records[0].job_id == "j0" and again.records[0].state is ItemState.RUNNING
    assert again.records[1].file == "0002-b.jpg" and again.in_state(ItemState.STORED) == [1]
    assert again.records[2].state is ItemState.SUBMITTING
    assert again.meta["durations"] == [16.0] and again.meta["owner"] == OWNER


def test_a_torn_last_line_is_ignored_and_a_damaged_one_refused(tmp_path: Path) -> None:
    batch = items(["a", "b"])
    ledger = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    ledger.set_meta(started=True)
    ledger.flush()
    ledger.update(0, state=ItemState.RUNNING, job_id="j0")
    ledger.flush()
    ledger.update(1, state=ItemState.RUNNING, job_id="j1")
    ledger.flush()
    ledger.store.close()
    journal = tmp_path / JOURNAL_NAME
    lines = journal.read_text().splitlines()
    journal.write_text(lines[0] + "\n" + lines[1][:-9])  # the last write torn
    again = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert again.records[0].job_id == "j0" and again.records[1].state is ItemState.PENDING
    journal.write_text("garbage\n" + journal.read_text())
    with pytest.raises(LedgerError, match="damaged"):
        Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)


def test_another_batch_or_other_prompts_are_refused(tmp_path: Path) -> None:
    batch = items(["a", "b"])
    first = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert not any(tmp_path.iterdir())  # nothing is written before the first flush
    first.set_meta(started=True)
    first.flush()
    with pytest.raises(LedgerError, match="belongs to another task instance"):
        Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner={**OWNER, "run_id": "r2"})
    with pytest.raises(LedgerError, match="written for 2 items, this try has 3"):
        Ledger.open(LocalLedgerStore(str(tmp_path)), items=items(["a", "b", "c"]), owner=OWNER)
    with pytest.raises(LedgerError, match=r"other prompts \(item 2, item 2, differs\)"):
        Ledger.open(LocalLedgerStore(str(tmp_path)), items=items(["a", "x"]), owner=OWNER)


def test_the_journal_is_folded_into_the_snapshot_as_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "COMPACT_MIN_BYTES", 2_000)
    batch = items([f"prompt {n}" for n in range(50)])
    ledger = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    for n in range(50):
        ledger.update(n, state=ItemState.RUNNING, job_id=f"job-{n}")
        ledger.flush()
        ledger.update(n, state=ItemState.STORED, file=f"{n}.jpg", sha256="00")
        ledger.flush()
    ledger.close()
    snapshot_text = (tmp_path / "ledger.json").read_text()
    # the journal never outgrows the snapshot by more than one write: O(N) bytes in all
    assert (tmp_path / JOURNAL_NAME).stat().st_size <= max(2_000, len(snapshot_text)) + 200
    assert json.loads(snapshot_text)["seq"] > 10  # folded in at least once along the way
    again = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert again.count(ItemState.STORED) == 50
    assert [r.job_id for r in again] == [f"job-{n}" for n in range(50)]


def test_object_storage_ledger() -> None:
    folder = ObjectStoragePath(f"memory://doitong-ledger-{uuid.uuid4().hex}/x")
    batch = items(["a", "b"])
    ledger = Ledger.open(ObjectLedgerStore(folder), items=batch, owner=OWNER)
    ledger.set_meta(started=True)
    ledger.flush()
    ledger.update(1, state=ItemState.RUNNING, job_id="j1")
    ledger.flush()
    ledger.update(0, state=ItemState.FAILED, error="boom")
    ledger.flush()
    again = Ledger.open(ObjectLedgerStore(folder), items=batch, owner=OWNER)
    assert again.records[1].job_id == "j1" and again.records[0].error == "boom"
    again._write_snapshot()
    assert ObjectLedgerStore(folder).read_journal() == b""
    third = Ledger.open(ObjectLedgerStore(folder), items=batch, owner=OWNER)
    assert third.records[0].state is ItemState.FAILED


def segments(folder: ObjectStoragePath) -> int:
    journal = folder / "ledger.journal"
    return len(list(journal.iterdir())) if journal.exists() else 0


def test_an_object_storage_journal_stays_a_few_objects() -> None:
    """Each flush is one object; opening the ledger (every resume, every retry) reads them all, so
    they are folded into the snapshot long before their bytes would be."""
    folder = ObjectStoragePath(f"memory://doitong-ledger-{uuid.uuid4().hex}/x")
    batch = items([f"prompt {n}" for n in range(60)])
    ledger = Ledger.open(ObjectLedgerStore(folder), items=batch, owner=OWNER)
    ledger.set_meta(started=True)
    ledger.flush()
    most = 0
    for n in range(60):
        for state in (ItemState.SUBMITTING, ItemState.RUNNING, ItemState.STORED):
            ledger.update(n, state=state, job_id=f"job-{n}")
            ledger.flush()
            most = max(most, segments(folder))
    assert most <= ledger_module.MAX_JOURNAL_OBJECTS + 1
    reader = ObjectLedgerStore(folder)
    again = Ledger.open(reader, items=batch, owner=OWNER)
    assert reader.journal_objects <= ledger_module.MAX_JOURNAL_OBJECTS + 1
    assert again.count(ItemState.STORED) == 60
    assert [r.job_id for r in again] == [f"job-{n}" for n in range(60)]
    again.update(0, state=ItemState.FAILED, error="boom")  # a reopened ledger goes on counting
    again.flush()
    assert reader.journal_objects == segments(folder)


def test_ledger_folders_are_named_by_task_instance() -> None:
    assert ledger_parts(dag_id="d", run_id="r", task_id="t", map_index=3) == [".doitong", "d", "r", "t.3"]


def _started(folder: Path, prompts: list[str]) -> tuple[list, Ledger]:
    batch = items(prompts)
    ledger = Ledger.open(LocalLedgerStore(str(folder)), items=batch, owner=OWNER)
    ledger.set_meta(started=True)
    ledger.flush()
    return batch, ledger


def test_a_torn_last_record_is_cut_away_and_the_next_tries_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    batch, ledger = _started(tmp_path, ["a", "b", "c"])
    ledger.update(0, state=ItemState.RUNNING, job_id="j0")
    ledger.flush()
    ledger.close()
    journal = tmp_path / JOURNAL_NAME
    whole = journal.read_bytes()
    with journal.open("ab") as handle:  # a disk that filled up in the middle of a record
        handle.write(b'{"q":9,"i":1,"set":{"state":"runn')
    for n in (1, 2):  # the next try, and the one after it
        again = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
        assert again.records[0].job_id == "j0" and again.records[n].state is ItemState.PENDING
        again.update(n, state=ItemState.RUNNING, job_id=f"j{n}")
        again.flush()
        again.close()
    assert "torn record" in caplog.text and str(journal) in caplog.text
    final = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert [r.job_id for r in final] == ["j0", "j1", "j2"]
    assert journal.read_bytes().startswith(whole) and journal.read_bytes().endswith(b"\n")


def test_a_torn_record_never_hides_a_later_submitting_marker(tmp_path: Path) -> None:
    """The marker written after a torn record must stay readable: it says a charge may exist."""
    batch, ledger = _started(tmp_path, ["a", "b"])
    ledger.close()
    with (tmp_path / JOURNAL_NAME).open("ab") as handle:
        handle.write(b'{"q":5,"i":0,"set":{"st')  # torn by a crash
    retry = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    retry.update(1, state=ItemState.SUBMITTING, attempts=1)
    retry.flush()  # acknowledged: then the POST went out, then the worker died
    retry.close()
    after = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert after.in_state(ItemState.SUBMITTING) == [1]


def test_damage_in_the_middle_is_a_clear_error(tmp_path: Path) -> None:
    batch, ledger = _started(tmp_path, ["a", "b"])
    for n in (0, 1):
        ledger.update(n, state=ItemState.RUNNING, job_id=f"j{n}")
        ledger.flush()
    ledger.close()
    journal = tmp_path / JOURNAL_NAME
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join([lines[0], b"\x00\x00 not json", *lines[1:]]))
    with pytest.raises(LedgerError) as caught:
        Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    message = str(caught.value)
    assert str(journal) in message and "line 2" in message and "delete its folder" in message


TAMPERED = [
    ("file", "../../outside.jpg"),
    ("file", "/etc/passwd"),
    ("file", ".doitong"),
    ("state", "bogus"),
    ("job_id", 12),
    ("job_id", "a\nb"),
    ("job_ids", "j0"),
    ("attempts", "2"),
    ("credits", -5),
    ("bytes", True),
    ("sha256", "zz"),
    ("unknown", 1),
]


@pytest.mark.parametrize(("key", "value"), TAMPERED, ids=[f"{k}={v!r}" for k, v in TAMPERED])
def test_a_tampered_journal_value_is_one_clear_error(tmp_path: Path, key: str, value: object) -> None:
    batch, ledger = _started(tmp_path, ["a"])
    ledger.close()
    record = {"q": 2, "i": 0, "set": {"state": "stored", "file": "0001-a.jpg", key: value}}
    with (tmp_path / JOURNAL_NAME).open("a") as handle:
        handle.write(json.dumps(record) + "\n" + json.dumps({"q": 3, "meta": {"x": 1}}) + "\n")
    with pytest.raises(LedgerError, match=r"damaged or was changed by hand \(line 1: "):
        Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)


@pytest.mark.parametrize(
    "change",
    [
        {"items": [{"index": 0, "key": "k", "state": "stored", "file": "../x.jpg"}]},
        {"items": [{"index": "0", "key": "k"}]},
        {"items": "many"},
        {"seq": "3"},
        {"meta": {"owner": ["d", "r"]}},
        {"meta": {"deadline": "soon"}},
    ],
)
def test_a_tampered_snapshot_is_one_clear_error(tmp_path: Path, change: dict) -> None:
    batch, ledger = _started(tmp_path, ["a"])
    ledger.close()
    snapshot = tmp_path / "ledger.json"
    doc = json.loads(snapshot.read_text())
    Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER).close()  # read as written
    for entry in change.get("items", []) if isinstance(change.get("items"), list) else []:
        entry["key"] = batch[0].fingerprint  # only the value named is wrong
    snapshot.write_text(json.dumps({**doc, **change}))
    with pytest.raises(LedgerError, match="damaged or was changed by hand"):
        Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)


def test_a_ledger_written_with_the_earlier_name_of_ambiguous_submissions_is_read(tmp_path: Path) -> None:
    # Ledgers written before the count was called ``ambiguous`` hold it as ``unconfirmed``, in the
    # snapshot and in the journal: a batch resumed after an upgrade keeps both counts.
    batch, ledger = _started(tmp_path, ["a", "b"])
    ledger.close()
    snapshot = tmp_path / "ledger.json"
    doc = json.loads(snapshot.read_text())
    doc["items"] = [{"index": 0, "key": batch[0].fingerprint, "state": "failed", "unconfirmed": 2}]
    snapshot.write_text(json.dumps(doc))
    with (tmp_path / JOURNAL_NAME).open("a") as handle:
        handle.write(f'{{"q":{doc["seq"] + 1},"i":1,"set":{{"state":"pending","unconfirmed":1}}}}\n')
    again = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert [record.ambiguous for record in again] == [2, 1]
    again.update(1, ambiguous=3)
    again.flush()
    again.close()
    assert b'"ambiguous":3' in (tmp_path / JOURNAL_NAME).read_bytes()
    reopened = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert [record.ambiguous for record in reopened] == [2, 3]


def test_a_journal_event_for_an_item_out_of_range_is_refused(tmp_path: Path) -> None:
    batch, ledger = _started(tmp_path, ["a"])
    ledger.close()
    with (tmp_path / JOURNAL_NAME).open("a") as handle:
        handle.write('{"q":2,"i":7,"set":{"state":"pending"}}\n{"q":3,"meta":{}}\n')
    with pytest.raises(LedgerError, match="item 8 of 1"):
        Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)


def test_a_symlinked_ledger_folder_is_refused_and_nothing_is_written_through_it(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    output = tmp_path / "out"
    output.mkdir()
    (output / ".doitong").symlink_to(outside)
    store = open_store(storage_path(str(output)), OWNER)
    with pytest.raises(UnsafeOutputPath, match="symlink"):
        Ledger.open(store, items=items(["a"]), owner=OWNER)
    ledger = Ledger(store, meta={"owner": OWNER}, records=[], seq=0)
    with pytest.raises(UnsafeOutputPath, match="symlink"):
        ledger._write_snapshot()
    assert list(outside.rglob("*")) == []


def test_a_planted_link_in_the_ledger_folder_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = tmp_path / "ledger"
    folder.mkdir()
    (folder / "ledger.json.part").symlink_to(victim)  # the name the snapshot's temporary file had
    batch, ledger = _started(folder, ["a"])
    ledger.close()
    assert json.loads((folder / "ledger.json").read_text())["format"] == "doitong-batch-ledger"
    (folder / JOURNAL_NAME).unlink()
    (folder / JOURNAL_NAME).symlink_to(victim)
    ledger.update(0, state=ItemState.RUNNING, job_id="j0")
    with pytest.raises(UnsafeOutputPath, match="symlink"):
        ledger.flush()
    with pytest.raises(UnsafeOutputPath, match="symlink"):
        Ledger.open(LocalLedgerStore(str(folder)), items=batch, owner=OWNER)
    assert victim.read_text() == "keep me"


def test_an_item_from_the_image_cache_is_marked_so_and_older_ledgers_still_read(tmp_path: Path) -> None:
    # A copy from the cache says so itself, even beside jobs of its own that failed before; a
    # ledger written before the field marks one by having no job at all, read the same.
    batch, ledger = _started(tmp_path, ["a", "b", "c"])
    ledger.update(0, state=ItemState.STORED, job_id="j-other", job_ids=["j-failed"], credits=0, cached=True)
    ledger.update(1, state=ItemState.STORED, job_id="j-own", job_ids=["j-own"], credits=10)
    ledger.set_meta(cache_to_fill=[1])
    ledger.flush()
    ledger.close()
    assert b'"cached":true' in (tmp_path / JOURNAL_NAME).read_bytes()
    snapshot = tmp_path / "ledger.json"
    doc = json.loads(snapshot.read_text())
    doc["items"] = [{"index": 2, "key": batch[2].fingerprint, "state": "stored", "job_id": "j-old"}]
    snapshot.write_text(json.dumps(doc))  # an older ledger's copy: no field, no job of its own
    again = Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
    assert [record.from_cache for record in again] == [True, False, True]
    assert [record.cached for record in again] == [True, False, False]
    assert again.meta["cache_to_fill"] == [1]
    again.close()


@pytest.mark.parametrize(
    ("event", "match"),
    [({"i": 0, "set": {"cached": "yes"}}, "cached"), ({"meta": {"cache_to_fill": [-1]}}, "cache_to_fill")],
    ids=["cached", "cache_to_fill"],
)
def test_a_cache_value_no_ledger_holds_is_refused(tmp_path: Path, event: dict, match: str) -> None:
    batch, ledger = _started(tmp_path, ["a"])
    ledger.close()
    seq = json.loads((tmp_path / "ledger.json").read_text())["seq"]
    with (tmp_path / JOURNAL_NAME).open("a") as handle:
        handle.write(json.dumps({"q": seq + 1, **event}) + "\n")
    with pytest.raises(LedgerError, match=match):
        Ledger.open(LocalLedgerStore(str(tmp_path)), items=batch, owner=OWNER)
