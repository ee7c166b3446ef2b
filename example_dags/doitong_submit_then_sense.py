"""
### Doitong: submit, then sense

Submit one image with `FluxGenerateOperator(wait_for_completion=False)`: the task ends as soon as
Doitong accepts the job and returns its id. `DoitongJobSensor` then waits for that job in the
triggerer (deferrable), holding no worker slot, and returns the completed job (with its `url`).

Use this split when something else stores the result, or when the wait should be a separate,
separately retried step.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_doitong.client import contract
from airflow_provider_doitong.hooks.connection import DEFAULT_CONN_ID
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from airflow_provider_doitong.sensors.doitong import DoitongJobSensor

DAG_ID = "doitong_submit_then_sense"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["doitong", "example"],
    doc_md=__doc__,
    params={
        "prompt": Param(
            "A paper boat sailing across a puddle that reflects a city skyline, macro photograph",
            type="string",
            minLength=1,
            maxLength=contract.PROMPT_MAX_CHARS,
        ),
        "width": Param(
            768,
            type="integer",
            minimum=contract.MIN_SIDE,
            maximum=contract.MAX_SIDE,
            multipleOf=contract.SIDE_MULTIPLE,
        ),
        "height": Param(
            768,
            type="integer",
            minimum=contract.MIN_SIDE,
            maximum=contract.MAX_SIDE,
            multipleOf=contract.SIDE_MULTIPLE,
        ),
    },
) as dag:
    submit = FluxGenerateOperator(
        task_id="submit",
        prompt="{{ params.prompt }}",
        width="{{ params.width }}",
        height="{{ params.height }}",
        doitong_conn_id=DEFAULT_CONN_ID,
        wait_for_completion=False,
    )
    sense = DoitongJobSensor(
        task_id="sense",
        job_id="{{ ti.xcom_pull(task_ids='submit')['job_id'] }}",
        doitong_conn_id=DEFAULT_CONN_ID,
        deferrable=True,
        poll_interval=5.0,
        timeout=3600,
    )
    submit >> sense
