"""
### Doitong: a person approves the day's images before they are published

Every day, one `FluxBatchOperator` generates an image per prompt into
`<$DOITONG_OUTPUT_ROOTS' first root>/review/<date>/` (a manual run adds its time), writes the contact
sheet and `manifest.json`, then **waits for a person** (`require_approval=True`, Airflow 3.1+),
holding no worker slot. Airflow's *Required actions* view shows the request: a link to the contact
sheet and each image's file and prompt, with **Approve** and **Reject**.

- Approved: the task succeeds and updates the `doitong_reviewed_images` asset (its extra names the
  folder and the manifest), for a publishing DAG to pick up.
- Rejected, or no answer within 20 hours (`on_approval_timeout="reject"`): the task fails, naming who
  rejected it; the images stay for a look later.

Either way the manifest's `review` record says who decided and when (or that the timeout did). The
reviewer answers in the UI or through the REST API:
`PATCH /api/v2/dags/doitong_review_and_publish/dagRuns/<run_id>/taskInstances/generate/-1/hitlDetails`
with `{"chosen_options": ["Approve"]}`. On Airflow 3.0 the DAG loads and its one task skips with the
reason. Unpausing starts the latest day's run at once: 30 credits on the real API.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_doitong._compat import HUMAN_REVIEW_UNAVAILABLE
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.operators.roots import configured_roots

DAG_ID = "doitong_review_and_publish"
REVIEWED_IMAGES = Asset(name="doitong_reviewed_images")
REVIEW_TIMEOUT = timedelta(hours=20)
DEFAULT_PROMPTS = [
    "A lighthouse on a cliff at dawn, watercolour",
    "A red fox asleep in fresh snow, soft light",
    "A paper boat on a rain-soaked street, neon reflections",
]

with DAG(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30)},  # a rejection is never retried
    render_template_as_native_obj=True,
    tags=["doitong", "example", "human-in-the-loop"],
    doc_md=__doc__,
    params={"prompts": Param(DEFAULT_PROMPTS, type="array", items={"type": "string"}, minItems=1)},
) as dag:
    if HUMAN_REVIEW_UNAVAILABLE is not None:

        @task
        def review_unavailable() -> None:
            raise AirflowSkipException(f"Skipped: {HUMAN_REVIEW_UNAVAILABLE}")

        review_unavailable()
    else:

        @task
        def folder(dag_run: Any) -> str:
            """``<first output root>/review/<date>``, plus the run's kind and time unless scheduled."""
            day = f"{dag_run.logical_date or dag_run.run_after:%Y-%m-%d}"
            kind = getattr(dag_run.run_type, "value", dag_run.run_type)
            name = day if kind == "scheduled" else f"{day}-{kind}-{dag_run.run_after:%H%M%S}"
            return f"{configured_roots('DOITONG_OUTPUT_ROOTS', '~/doitong-images')[0]}/review/{name}"

        FluxBatchOperator(
            task_id="generate",
            prompts="{{ params.prompts }}",
            output_path=folder(),
            deferrable=True,
            require_approval=True,
            approval_timeout=REVIEW_TIMEOUT,
            on_approval_timeout="reject",
            outlets=[REVIEWED_IMAGES],
        )
