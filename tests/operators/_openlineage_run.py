"""Run two small DAGs with ``dag.test()`` in a fresh process whose OpenLineage is on (file transport).

OpenLineage decides at import whether its listener is on, so the lineage test runs this module in a
subprocess with ``AIRFLOW__OPENLINEAGE__TRANSPORT`` set, instead of turning it on for every test.
It writes ``{dag_id: {"states": ..., "result": ...}}`` as JSON to ``<work folder>/runs.json``.

    python -m tests.operators._openlineage_run <work folder>
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Importing the test set-up first points Airflow at the test session's home (DOITONG_TEST_AIRFLOW_HOME).
from tests.conftest import run_dag, task_states, xcom_value  # isort: skip

import pendulum
from airflow.sdk import DAG

from airflow_provider_doitong.operators.flux import FluxGenerateOperator

SUCCEEDS = "doitong_lineage_succeeds"
FAILS = "doitong_lineage_fails"


def _dag(dag_id: str, work: Path, **op_kwargs: object) -> DAG:
    with DAG(
        dag_id,
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1),
        catchup=False,
        template_searchpath=[str(work)],
    ) as dag:
        FluxGenerateOperator(task_id="generate", poll_interval=0.1, **op_kwargs)  # type: ignore[arg-type]
    return dag


def main(work: Path) -> dict[str, object]:
    dags = [
        _dag(
            SUCCEEDS,
            work,
            prompt_file=str(work / "hero.txt"),
            width=512,
            height=768,
            quality="high",
            output_path=f"{work / 'images'}/",
            deferrable=True,
            doitong_conn_id="doitong_lineage",
        ),
        _dag(FAILS, work, prompt="a storm that never ends", doitong_conn_id="doitong_failing"),
    ]
    out: dict[str, object] = {}
    for dag in dags:
        run = run_dag(dag)
        out[dag.dag_id] = {"states": task_states(run), "result": xcom_value(run, "generate")}
    return out


if __name__ == "__main__":
    work = Path(sys.argv[1])
    (work / "runs.json").write_text(json.dumps(main(work)))
