"""``FluxBatchOperator(require_approval=True)`` left unanswered, in real Airflow (``dag.test()``).

When ``approval_timeout`` passes, Airflow answers with ``on_approval_timeout``: on 3.3 the
scheduler's timeout sweep does (run here beside ``dag.test()``, which has no scheduler), on 3.1 and
3.2 the standard provider's trigger. The answered cases are in ``tests/examples/test_review_and_publish.py``.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_doitong import _compat
from airflow_provider_doitong.batch.manifest import verify_manifest
from tests.batch.test_batch_operator import batch_dag
from tests.conftest import run_dag, task_states, xcom_value

if _compat.HUMAN_REVIEW_UNAVAILABLE:
    pytest.skip(_compat.HUMAN_REVIEW_UNAVAILABLE, allow_module_level=True)


class TimeoutSweep(threading.Thread):
    """The scheduler's own sweep of timed-out ``awaiting_input`` tasks, every half second (3.3+)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.done = threading.Event()

    def run(self) -> None:
        from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

        scheduler = SimpleNamespace(log=logging.getLogger("timeout-sweep"))
        while not self.done.wait(0.5):
            SchedulerJobRunner.check_awaiting_input_timeouts(scheduler)  # type: ignore[arg-type]


@pytest.mark.parametrize(("on_timeout", "state"), [("approve", "success"), ("reject", "failed")])
def test_an_unanswered_review_takes_the_timeout_fallback_and_the_manifest_says_so(
    on_timeout: str, state: str, doitong_conn: Any, tmp_path: Path
) -> None:
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    dag = batch_dag(
        f"review_timeout_{on_timeout}",
        prompts=["a gull on a post", "a lantern in fog"],
        output_path=str(tmp_path / "out"),
        require_approval=True,
        approval_timeout=1,
        on_approval_timeout=on_timeout,
    )
    sweep = TimeoutSweep()
    if hasattr(SchedulerJobRunner, "check_awaiting_input_timeouts"):
        sweep.start()
    try:
        run = run_dag(dag)
    finally:
        sweep.done.set()
    assert task_states(run) == {"batch": state}
    folder = tmp_path / "out"
    review = json.loads((folder / "manifest.json").read_text())["review"]
    assert (
        review["decision"] == {"approve": "approved", "reject": "rejected"}[on_timeout]
        and review["timed_out"] is True
    )
    assert review["by"] is None and review["at"]
    assert verify_manifest(str(folder)) == [] and len(list(folder.glob("*.jpg"))) == 2
    assert doitong_conn.stats()["requests"]["submit"] == 2
    if state == "success":
        assert xcom_value(run, "batch")["review"] == review
