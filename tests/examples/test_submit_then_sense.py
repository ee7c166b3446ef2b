"""The submit-then-sense example against the emulator."""

from __future__ import annotations

from typing import Any

from tests.conftest import run_dag, task_states, xcom_value
from tests.examples._helpers import load_example


def test_submit_returns_at_once_and_the_sensor_waits_in_the_triggerer(doitong_conn: Any) -> None:
    module = load_example("doitong_submit_then_sense")
    dag = module.dag
    sense = dag.get_task("sense")
    assert sense.deferrable is True and dag.get_task("submit").wait_for_completion is False
    sense.poll_interval = 0.1

    run = run_dag(dag, run_conf={"prompt": "a paper boat in a puddle", "width": 512, "height": 512})

    assert task_states(run) == {"submit": "success", "sense": "success"}
    submitted = xcom_value(run, "submit")
    assert submitted["status"] in ("queued", "processing") and submitted["url"] is None
    sensed = xcom_value(run, "sense")
    assert sensed["id"] == submitted["job_id"]
    assert sensed["status"] == "completed" and sensed["url"]
    assert (sensed["width"], sensed["height"]) == (512, 512)
    assert doitong_conn.stats()["submissions_by_prompt"] == {"a paper boat in a puddle": 1}
