"""A batch's process SIGKILLed while a group of its submissions is in flight, then run again on its ledger.

The batch runs in a process of its own against the emulator, every API answer 0.3 s late, and is
killed as the first answers come: its ledger then holds items ``submitting`` whose POSTs were in
flight. The next run finds them, treats each as possibly charged, and finishes: every other item
was submitted once, none more than twice, and every image is stored with its checksum.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.stores import LocalLedgerStore

OWNER = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}
PROMPTS = [f"a killed batch, image {n}" for n in range(64)]

#: One run of the batch, as the operator's sync path does it (a try, ambiguous items, the loop).
RUN = textwrap.dedent(
    """
    import logging, sys
    from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
    from airflow_provider_doitong.batch.ledger import Ledger
    from airflow_provider_doitong.batch.planner import Limits, Planner
    from airflow_provider_doitong.batch.runner import BatchRunner
    from airflow_provider_doitong.batch.stores import LocalLedgerStore
    from airflow_provider_doitong.client import DoitongClient
    from airflow_provider_doitong.storage import storage_path

    base_url, key, root, try_number = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    prompts = [f"a killed batch, image {n}" for n in range(64)]
    items = build_items(entries_from_list(prompts), ItemDefaults(width=256, height=256))[0]
    owner = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}
    ledger = Ledger.open(LocalLedgerStore(root + "/ledger"), items=items, owner=owner)
    planner = Planner(
        limits=Limits(concurrency=1000, requests_per_window=6000, window_s=60.0), poll_interval=0.5
    )
    runner = BatchRunner(
        items=items, ledger=ledger, client=DoitongClient(api_key=key, base_url=base_url),
        planner=planner, folder=storage_path(root + "/out"), item_retries=2, max_failed_items=64,
        logger=logging.getLogger("batch"),
    )
    runner.start_try(try_number=try_number, deadline=None)
    runner.resolve_ambiguous()
    ledger.flush()
    print(runner.run())
    """
)


def run_batch(emu: Any, root: Path, try_number: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", RUN, emu.base_url, emu.api_key, str(root), str(try_number)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )


@pytest.mark.timeout(300)
def test_a_kill_with_submissions_in_flight_loses_no_image_and_resends_only_those(
    doitong_emulators: Any, tmp_path: Path
) -> None:
    with doitong_emulators(
        plan="enterprise",
        concurrent_jobs=1_000,
        requests_per_minute=6_000,
        time_scale=0.05,
        job_seconds=10,
        credits=100_000,
    ) as emu:
        emu.set_faults(latency_s=0.3)
        first = run_batch(emu, tmp_path, 1)
        deadline = time.time() + 120
        # the first wave's first submission goes alone; the rest of the wave follows as one group
        while sum(e["kind"] == "submit" for e in emu.request_log()) < 2:
            assert first.poll() is None and time.time() < deadline, first.communicate()[0][-3000:]
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)  # as the group's first answers come: the rest in flight
        first.wait(timeout=30)
        items = build_items(entries_from_list(PROMPTS), ItemDefaults(width=256, height=256))[0]
        killed = Ledger.open(LocalLedgerStore(str(tmp_path / "ledger")), items=items, owner=OWNER)
        in_flight = killed.in_state(ItemState.SUBMITTING)
        killed.close()
        assert len(in_flight) > 1  # the kill landed with several POSTs sent, their answers not recorded

        second = run_batch(emu, tmp_path, 2)
        out = second.communicate(timeout=240)[0].decode(errors="replace")
        assert second.returncode == 0, out[-3000:]
        assert "Finished(reason='')" in out, out[-3000:]
        counts = emu.stats()["submissions_by_prompt"]

    ledger = Ledger.open(LocalLedgerStore(str(tmp_path / "ledger")), items=items, owner=OWNER)
    for record in ledger.records:
        prompt = PROMPTS[record.index]
        assert record.state is ItemState.STORED, record
        data = (tmp_path / "out" / str(record.file)).read_bytes()
        assert hashlib.sha256(data).hexdigest() == record.sha256  # no image lost or torn
        if record.index in in_flight:  # possibly charged: sent again at most once
            assert record.ambiguous == 1 and counts[prompt] in (1, 2), (record, counts[prompt])
        else:  # recorded before the kill, or never sent before it: one submission
            assert record.ambiguous == 0 and counts[prompt] == 1, (record, counts[prompt])
