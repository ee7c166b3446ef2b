"""
### Doitong: publish the day's images

Runs whenever `doitong_daily_prompt_batch` updates the `doitong_daily_images` asset. For every
triggering event it reads the event's extra (the batch's summary: folder, manifest, counts) and
publishes the day with the provider's `publish_folder`: every stored image is checked against the
manifest's SHA-256, then the images, `manifest.json` and `index.html` are copied to
`<output root>/published/<day folder>/` (beside the dated folders, or under the `published_root`
param) with a `publication.json` record of what was published, from which run.

One run per event: on Airflow 3.4 and later the DAG sets `batch_asset_events=False` (3.4's default,
kept even where `[scheduler] batch_asset_events` is on), so each day is published by a run of its
own, retried or cleared alone. Before 3.4 Airflow has no such choice: the events queued before a run
is created all go to that run, and its task publishes their days one after another.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException
from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_doitong._compat import asset_schedule
from airflow_provider_doitong.batch.publish import PublishRefused, publish_folder

#: The asset ``doitong_daily_prompt_batch`` updates (the same name there).
DAILY_IMAGES = Asset(name="doitong_daily_images")

with DAG(
    dag_id="doitong_asset_consumer",
    schedule=asset_schedule(DAILY_IMAGES, batch_asset_events=False),
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["doitong", "example"],
    doc_md=__doc__,
    params={
        "published_root": Param(
            None,
            type=["null", "string"],
            description="Where <date>/ folders are published; empty: 'published' beside the dated folders.",
        ),
    },
) as dag:

    @task
    def publish(
        triggering_asset_events: Any = None, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Publish every day announced by the events that triggered this run."""
        events = list((triggering_asset_events or {}).get(DAILY_IMAGES, []))
        if not events:
            raise AirflowSkipException(
                f"No {DAILY_IMAGES.name} events triggered this run; nothing to publish"
            )
        records = []
        for event in events:
            extra = event.extra or {}
            if not extra.get("folder"):
                raise AirflowFailException(f"The asset event's extra lacks the folder: {dict(extra)!r}")
            source = {
                "dag_id": event.source_dag_id,
                "run_id": event.source_run_id,
                "task_id": event.source_task_id,
                "timestamp": event.timestamp.isoformat() if event.timestamp else None,
            }
            try:
                record = publish_folder(
                    extra["folder"],
                    day=extra.get("date"),
                    published_root=(params or {}).get("published_root"),
                    source=source,
                )
            except PublishRefused as refused:  # an altered image stays altered: no retry
                raise AirflowFailException(str(refused)) from refused
            records.append(record)
        return records

    publish()
