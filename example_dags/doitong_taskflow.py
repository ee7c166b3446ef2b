"""
### Doitong with TaskFlow: `@task.doitong` and `@task.doitong_batch`

The decorated function returns what to generate: a prompt for `@task.doitong` (one image), a list of
prompts for `@task.doitong_batch` (or a prompts file as a `pathlib.Path`). The decorator takes the
operators' parameters; the task's XCom value is the operator's. Here a poster for the `subject`
param, then three variations of its prompt as a batch, both waiting in the triggerer.

Trigger it by hand (no logical date needed). Images go to
`<$DOITONG_OUTPUT_ROOTS' first root>/taskflow/<run id>/`; the run conf gives only the subject.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_doitong.batch.stores import safe_component
from airflow_provider_doitong.operators.roots import configured_roots

DAG_ID = "doitong_taskflow"
OUTPUT_ROOTS_ENV = "DOITONG_OUTPUT_ROOTS"
STYLES = ("watercolour", "woodcut print", "neon sign")

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["doitong", "example"],
    doc_md=__doc__,
    params={"subject": Param("a lighthouse at dawn", type="string", minLength=1, maxLength=200)},
) as dag:

    @task
    def folder(run_id: str) -> str:
        # the deployment's first output root, never a path from the run conf
        root = configured_roots(OUTPUT_ROOTS_ENV, "~/doitong-images")[0]
        return f"{root}/taskflow/{safe_component(run_id)}"

    where = "{{ ti.xcom_pull(task_ids='folder') }}"

    @task.doitong(width=1024, height=1024, deferrable=True, output_path=f"{where}/poster/", max_credits=20)
    def poster(params: dict[str, Any]) -> str:
        return f"A poster of {params['subject']}, flat colours, bold shapes"

    @task.doitong_batch(width=512, height=512, deferrable=True, output_path=f"{where}/variations/")
    def variations(made: dict[str, Any]) -> list[str]:
        return [f"{made['prompt']}, as a {style}" for style in STYLES]

    first = poster()
    folder() >> first
    variations(first)
