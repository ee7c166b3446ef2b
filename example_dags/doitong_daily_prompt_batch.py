"""
### Doitong daily prompt batch

Every day, one `FluxBatchOperator` task generates the day's prompts at the plan's pace: it checks
every prompt and the estimated credits (the `budget_credits` param and the account's balance)
before anything is spent, keeps the plan's job slots full, stores the images as `0001-<prompt>.jpg`
with `manifest.json` and `index.html` in `<output root>/<date>/`, and announces them on the
`doitong_daily_images` asset. A retry or a crash resubmits nothing: the batch's ledger is beside
the images.

**Paths.** A run conf cannot read or write anywhere it likes: `prompts_file` is a file under one of
the prompts roots (`$DOITONG_PROMPTS_ROOTS`, comma-separated; default: this folder's `prompts/`), or a
list of prompts; `output_root` must be one of the output roots or inside one
(`$DOITONG_OUTPUT_ROOTS`; default `~/doitong-images`), local or object storage (`s3://bucket/images`).

**Credits.** Unpausing starts the latest day's run at once: with the shipped prompts, about 80 credits
on the real API. Point `doitong_default` at the emulator (`python3 dev.py emulator`) to try it for free.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_doitong.client import contract
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.operators.roots import configured_roots, inside_roots
from airflow_provider_doitong.storage import storage_path, write_image

DAG_ID = "doitong_daily_prompt_batch"
DAILY_IMAGES = Asset(name="doitong_daily_images")
DAG_FOLDER = os.path.dirname(os.path.abspath(__file__))
PROMPTS_ROOTS_ENV, OUTPUT_ROOTS_ENV = "DOITONG_PROMPTS_ROOTS", "DOITONG_OUTPUT_ROOTS"


with DAG(
    dag_id=DAG_ID,
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["doitong", "example"],
    doc_md=__doc__,
    params={
        "prompts_file": Param(
            "daily_prompts.txt",
            type=["string", "array"],
            items={"type": "string"},
            description="A file under $DOITONG_PROMPTS_ROOTS (default: this DAG's prompts/), or the prompts.",
        ),
        "output_root": Param(
            None,
            type=["null", "string"],
            description="Empty: the first of $DOITONG_OUTPUT_ROOTS (default ~/doitong-images); else inside one.",
        ),
        "provider": Param("flux-krea", type="string", enum=list(contract.PROVIDERS)),
        "width": Param(contract.DEFAULT_WIDTH, type="integer"),
        "height": Param(contract.DEFAULT_HEIGHT, type="integer"),
        "quality": Param(contract.DEFAULT_QUALITY, type="string", enum=list(contract.QUALITIES)),
        "budget_credits": Param(None, type=["null", "integer"], minimum=0),
        "poll_interval": Param(10.0, type="number", exclusiveMinimum=0),
    },
) as dag:

    @task
    def plan_day(params: dict[str, Any], dag_run: Any) -> dict[str, str]:
        """The run's folder, ``<root>/<date>`` (logical date, else run day; plus the time unless scheduled)."""
        output_roots = configured_roots(OUTPUT_ROOTS_ENV, "~/doitong-images")
        root = inside_roots(params["output_root"] or output_roots[0], output_roots, what="output_root")
        kind = getattr(dag_run.run_type, "value", dag_run.run_type)
        day = f"{dag_run.logical_date or dag_run.run_after:%Y-%m-%d}"
        name = day if kind == "scheduled" else f"{day}-{kind}-{dag_run.run_after:%H%M%S}"
        folder = f"{root}/{name}"
        source = params["prompts_file"]
        if isinstance(source, list):  # kept beside the images, so the day's prompts stay on record
            prompts_file = f"{folder}/prompts.jsonl"
            kept = [p for p in source if p.strip() and not p.strip().startswith("#")]
            lines = "".join(json.dumps({"prompt": p}) + "\n" for p in kept)
            write_image(storage_path(prompts_file), lines.encode("utf-8"))
        else:
            prompts_roots = configured_roots(PROMPTS_ROOTS_ENV, os.path.join(DAG_FOLDER, "prompts"))
            prompts_file = inside_roots(source, prompts_roots, what="prompts_file")
        return {"folder": folder, "prompts_file": prompts_file}

    day = plan_day()
    FluxBatchOperator(
        task_id="generate",
        prompts_file=day["prompts_file"],
        output_path=day["folder"],
        provider="{{ params.provider }}",
        width="{{ params.width }}",
        height="{{ params.height }}",
        quality="{{ params.quality }}",
        max_credits="{{ params.budget_credits }}",
        poll_interval="{{ params.poll_interval }}",
        deferrable=True,
        retries=2,
        outlets=[DAILY_IMAGES],
    )
