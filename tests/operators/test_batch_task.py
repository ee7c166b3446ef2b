"""Where a batch's state is kept between tries: the ledger under ``output_path`` and the state-store pointer."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_doitong._compat import AirflowFailException
from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.batch.ledger import ItemState
from airflow_provider_doitong.operators import batch_task


class StateStore:
    """Airflow 3.3's ``context["task_state_store"]``: get and set JSON values by key."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value


def context(store: StateStore | None = None, run_id: str = "r1") -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="d", run_id=run_id, task_id="t", map_index=-1)
    return {"ti": ti, **({"task_state_store": store} if store is not None else {})}


ITEMS = build_items(entries_from_list(["a fox", "a tram"]), ItemDefaults())[0]


def test_the_pointer_follows_the_ledger_and_guards_a_moved_output_path(tmp_path: Path) -> None:
    store = StateStore()
    folder, ledger = batch_task.open_ledger(context(store), str(tmp_path / "a"), ITEMS)
    assert ledger.is_new
    ledger.update(0, state=ItemState.RUNNING, job_id="j0")
    ledger.flush()
    batch_task.save_pointer(context(store), ledger)
    pointer = store.values[batch_task.STATE_KEY]
    assert pointer["ledger"] == ledger.store.location and pointer["running"] == 1 and pointer["pending"] == 1
    _, again = batch_task.open_ledger(context(store), str(tmp_path / "a"), ITEMS)
    assert not again.is_new and again.records[0].job_id == "j0"
    with pytest.raises(AirflowFailException, match="output_path changed between tries"):
        batch_task.open_ledger(context(store), str(tmp_path / "b"), ITEMS)
    assert batch_task.read_pointer(context()) is None  # before Airflow 3.3: the ledger alone


def test_a_vanished_ledger_is_not_started_over_once_jobs_were_submitted(tmp_path: Path) -> None:
    store = StateStore()
    _, ledger = batch_task.open_ledger(context(store), str(tmp_path), ITEMS)
    ledger.update(1, state=ItemState.RUNNING, job_id="j1")
    ledger.flush()
    batch_task.save_pointer(context(store), ledger)
    for path in sorted(tmp_path.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    with pytest.raises(AirflowFailException, match="is gone, but an earlier run of this task submitted jobs"):
        batch_task.open_ledger(context(store), str(tmp_path), ITEMS)
    with pytest.raises(AirflowFailException, match="is gone"):
        batch_task.open_ledger(context(), str(tmp_path), ITEMS, resuming=True)
    _, fresh = batch_task.open_ledger(context(), str(tmp_path), ITEMS)  # a first try: nothing to lose
    assert fresh.is_new


def test_a_tampered_or_linked_ledger_fails_the_task_for_good(tmp_path: Path) -> None:
    _, ledger = batch_task.open_ledger(context(), str(tmp_path), ITEMS)
    ledger.update(0, state=ItemState.STORED, file="0001-a-fox.jpg", sha256="ab")
    ledger.flush()
    ledger.close()
    snapshot = next(tmp_path.rglob("ledger.json"))
    doc = json.loads(snapshot.read_text())
    doc["items"][0]["file"] = "../../../../outside.jpg"
    snapshot.write_text(json.dumps(doc))
    with pytest.raises(AirflowFailException, match=r"changed by hand .*not a file name in the output folder"):
        batch_task.open_ledger(context(), str(tmp_path), ITEMS)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / ".doitong").symlink_to(elsewhere)
    with pytest.raises(AirflowFailException, match="symlink"):
        batch_task.open_ledger(context(), str(other), ITEMS)
    assert list(elsewhere.iterdir()) == []
