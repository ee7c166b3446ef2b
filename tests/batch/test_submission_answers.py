"""A group's answers are made durable as they come, not once its slowest answer is in.

A job id held only in memory is lost if the process dies, and its item, still ``submitting`` in the
ledger, is submitted (and paid) again by the next try. The fake client here holds one submission's
answer until the test lets it go; the ledger, the runner, the submitter and their threads are real.
The same kill, in a real Airflow worker against the emulator: tests/e2e/test_batch_kill_in_flight.py.
"""

from __future__ import annotations

import threading
import time

from airflow_provider_doitong.batch.submitter import ANSWER_RECORD_SECONDS
from airflow_provider_doitong.client import Job
from tests.batch.test_submission_groups import durable_states, job, runner_for


def test_answers_are_durable_while_a_sibling_is_still_in_flight() -> None:
    slow = threading.Event()

    def answer(index: int) -> Job:
        if index == 3:
            assert slow.wait(timeout=30)
        return job(index)

    runner, store, _ = runner_for(4, answer)
    before = store.writes
    sending = threading.Thread(target=runner.submit, args=(4,))
    sending.start()
    try:
        deadline = time.time() + 10 * ANSWER_RECORD_SECONDS + 5
        while durable_states(store, runner.items) != ["running"] * 3 + ["submitting"]:
            assert time.time() < deadline, durable_states(store, runner.items)
            time.sleep(0.02)
    finally:
        slow.set()
        sending.join(timeout=30)
        runner.lanes.close()
    assert durable_states(store, runner.items) == ["running"] * 4
    # the marks; the three early answers; the last one
    assert store.writes - before == 3
