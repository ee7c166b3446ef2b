"""
### Doitong mapped batch: one task per image

For a handful of prompts where one task per image is wanted (its own retries, logs and link in the
UI), a mapped `FluxGenerateOperator` in the `doitong` pool, then the provider's manifest API on the
mapped results: `manifest.json` and `index.html` beside the images, as `FluxBatchOperator` writes
them. For a day's batch, use `doitong_daily_prompt_batch`: one task, at the plan's pace.

Images go to `<$DOITONG_OUTPUT_ROOTS' first root>/mapped/<run id>/`; the run conf gives only prompts.
Create the pool once, sized to the plan's concurrent jobs:
`airflow pools set doitong 10 "Doitong concurrent jobs" --include-deferred`.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_doitong.batch import manifest
from airflow_provider_doitong.batch.stores import safe_component
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from airflow_provider_doitong.operators.roots import configured_roots

DAG_ID = "doitong_mapped_batch"
DOITONG_POOL = "doitong"
OUTPUT_ROOTS_ENV = "DOITONG_OUTPUT_ROOTS"


with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["doitong", "example"],
    doc_md=__doc__,
    params={
        "prompts": Param(
            ["a lighthouse at dawn", "a fox in the snow"], type="array", items={"type": "string"}, maxItems=50
        ),
    },
) as dag:

    @task
    def folder(run_id: str) -> str:
        # the deployment's first output root, never a path from the run conf
        return f"{configured_roots(OUTPUT_ROOTS_ENV, '~/doitong-images')[0]}/mapped/{safe_component(run_id)}"

    @task
    def prompts(params: dict[str, Any]) -> list[str]:
        return [p for p in params["prompts"] if p.strip()]

    where = folder()
    images = FluxGenerateOperator.partial(
        task_id="generate",
        output_path="{{ ti.xcom_pull(task_ids='folder') }}/",
        deferrable=True,
        pool=DOITONG_POOL,
        retries=2,
        map_index_template="{{ task.prompt | truncate(60) }}",
    ).expand(prompt=prompts())
    where >> images

    @task
    def contact_sheet(results: list[dict[str, Any]], where: str, run_id: str) -> dict[str, str]:
        """``manifest.json`` and ``index.html`` for the mapped results (SHA-256 read from each file)."""
        entries = manifest.entries_from_results(results, folder=where)
        return manifest.write_manifest(
            where, manifest.build_manifest(entries, title=f"Doitong images, {run_id}")
        )

    contact_sheet(images.output, where)
