"""A batch whose ledger journal was torn by a full disk goes on, in real Airflow (``dag.test()``).

The disk fills up in the middle of a journal record: that try fails. The next try cuts the torn
record away before it appends anything, so every later opening of the ledger (each resume of a
deferrable batch) reads it whole, and every image is stored once.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.batch.stores import JOURNAL_NAME, LocalLedgerStore
from tests.batch.test_batch_operator import PROMPTS, batch_dag
from tests.conftest import run_dag, task_states


def test_a_journal_torn_by_a_full_disk_is_cut_and_the_batch_goes_on(
    doitong_conn: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    original = LocalLedgerStore.append_journal
    appends: list[int] = []
    lost: set[int] = set()  # the items whose job ids the torn record held

    def append_journal(self: LocalLedgerStore, text: str, *, seq: int) -> None:
        appends.append(seq)
        if len(appends) == 4:  # the disk fills up half-way through a record
            events = [json.loads(line) for line in text.splitlines()]
            lost.update(e["i"] for e in events if "job_id" in e.get("set", {}))
            original(self, text[: len(text) // 2], seq=seq)
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, text, seq=seq)

    monkeypatch.setattr(LocalLedgerStore, "append_journal", append_journal)
    folder = tmp_path / "out"
    prompts = PROMPTS[:6]
    dag = batch_dag(
        "batch_torn_journal",
        prompts=prompts,
        output_path=str(folder),
        deferrable=True,
        min_defer_seconds=0,
        retries=2,
        retry_delay=0,
    )
    run = run_dag(dag)
    out = capfd.readouterr().out
    assert task_states(run) == {"batch": "success"}
    assert run.get_task_instances()[0].try_number == 2
    logged = out + caplog.text
    assert "ends with a torn record" in logged and "cutting it away" in logged
    assert "Resumed" in out  # the ledger was opened again after the cut, and read whole
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["image_count"] == len(prompts)
    journal = next(folder.rglob(JOURNAL_NAME)).read_bytes()
    assert not journal or journal.endswith(b"\n")
    counts = doitong_conn.stats()["submissions_by_prompt"]
    # sent again: at most the items whose accepted answers the torn record held (their job ids lost)
    assert {p for p, n in counts.items() if n > 1} <= {prompts[i] for i in lost}
    assert sum(counts.values()) <= len(prompts) + len(lost)
