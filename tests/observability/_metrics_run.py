"""Run a small batch with ``dag.test()`` in a fresh process whose metrics (and traces) are on.

Airflow reads ``[metrics]`` and ``[traces]`` once per process, so the metrics tests run this module
in a subprocess with ``AIRFLOW__METRICS__*`` / ``AIRFLOW__TRACES__*`` set. The batch's DAG runs under
a span of this script's own (``doitong-test-run``), which stands in for the task's span a worker
makes; the job spans must be its children. Writes ``{"states": ..., "manifest": ...}`` as JSON to
``<work folder>/run.json``.

    python -m tests.observability._metrics_run <work folder> <deferrable: 0 or 1>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Importing the test set-up first points Airflow at the test session's home (DOITONG_TEST_AIRFLOW_HOME).
from tests.conftest import run_dag, task_states  # isort: skip

import pendulum
from airflow.sdk import DAG
from opentelemetry import trace

from airflow_provider_doitong.operators.batch import FluxBatchOperator

DAG_ID = "doitong_metrics_batch"
PROMPTS = [f"a quiet harbour, study {n}" for n in range(3)]


def main(work: Path, *, deferrable: bool) -> dict[str, object]:
    with DAG(DAG_ID, schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False) as dag:
        FluxBatchOperator(
            task_id="batch",
            prompts=PROMPTS,
            output_path=str(work / "out"),
            width=256,
            height=256,
            poll_interval=0.2,
            deferrable=deferrable,
            min_defer_seconds=0,
            doitong_conn_id="doitong_metrics",
        )
    with trace.get_tracer("tests").start_as_current_span("doitong-test-run"):
        run = run_dag(dag)
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    return {"states": task_states(run), "manifest": manifest}


if __name__ == "__main__":
    work = Path(sys.argv[1])
    (work / "run.json").write_text(json.dumps(main(work, deferrable=sys.argv[2] == "1")))
