"""
### Doitong: publish the day's images

Runs whenever `doitong_daily_prompt_batch` updates the `doitong_daily_images` asset. For every
triggering event it reads the event's extra (the batch's summary: folder, manifest, counts), checks
every stored image against the manifest's SHA-256, and publishes the day: the images, `manifest.json`
and `index.html` are copied to `<output root>/published/<day folder>/` (beside the dated folders, or
under the `published_root` param) together with a `publication.json` record of what was published,
from which run.

One run per event: on Airflow 3.4 and later the DAG sets `batch_asset_events=False` (3.4's default,
kept even where `[scheduler] batch_asset_events` is on), so each day is published by a run of its
own, retried or cleared alone. Before 3.4 Airflow has no such choice: the events queued before a run
is created all go to that run, and its task publishes their days one after another.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException
from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_doitong._compat import asset_schedule
from airflow_provider_doitong.batch import manifest
from airflow_provider_doitong.storage import shown, storage_path, write_image

log = logging.getLogger(__name__)

DAG_ID = "doitong_asset_consumer"
#: The asset ``doitong_daily_prompt_batch`` updates (the same name there).
DAILY_IMAGES = Asset(name="doitong_daily_images")
PUBLISHED_DIR = "published"
PUBLICATION_RECORD = "publication.json"


def publish_day(
    extra: Mapping[str, Any], *, published_root: str | None = None, source: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Publish one day's images, as announced by a ``doitong_daily_images`` event.

    Every image is checked against its folder's manifest (the provider's ``verify_manifest``) before
    anything is written; publishing the same day again replaces the earlier publication's files.

    :param extra: the event's extra: its ``folder`` (an absolute path or a URI) holds the images and
        ``manifest.json``; the day is its ``date`` if given, else the folder's name.
    :param published_root: where ``<date>/`` folders are published; default ``<folder>/../published``.
    :param source: where the event came from (DAG, run, timestamp), for the record.
    :return: the publication record, also written as ``publication.json``.
    :raises AirflowFailException: if the extra names no folder, the folder has no manifest, or an
        image is missing or altered.
    """
    if not extra.get("folder"):
        raise AirflowFailException(f"The asset event's extra lacks the folder: {dict(extra)!r}")
    folder = storage_path(str(extra["folder"]))
    day = str(extra.get("date") or folder.name)
    doc = manifest.read_manifest(folder)
    if doc is None:
        raise AirflowFailException(f"{shown(folder)} holds no {manifest.MANIFEST_NAME}")
    problems = manifest.verify_manifest(folder)
    if problems:
        raise AirflowFailException(f"The images of {day} do not match their manifest: {'; '.join(problems)}")
    root = storage_path(published_root) if published_root else folder.parent / PUBLISHED_DIR
    target = root / day

    stored = [entry["file"] for entry in doc.get("items", []) if entry.get("status") == manifest.STORED]
    files = {name: (folder / name).read_bytes() for name in [*stored, manifest.MANIFEST_NAME]}
    if (folder / manifest.CONTACT_SHEET_NAME).exists():
        files[manifest.CONTACT_SHEET_NAME] = (folder / manifest.CONTACT_SHEET_NAME).read_bytes()
    for name, data in files.items():
        write_image(target / name, data)
    record = {
        "date": day,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "folder": shown(target),
        "source_folder": shown(folder),
        "image_count": len(stored),
        "credits_spent": doc.get("credits_spent"),
        "files": sorted(files),
        "source": dict(source or {}),
    }
    write_image(target / PUBLICATION_RECORD, json.dumps(record, indent=2).encode("utf-8"))
    log.info(
        "Published %d images of %s (%s credits) from %s to %s",
        record["image_count"],
        day,
        record["credits_spent"],
        record["source_folder"],
        record["folder"],
    )
    return record


with DAG(
    dag_id=DAG_ID,
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
        """Publish every day announced by the events that triggered this run.

        :param triggering_asset_events: the run's triggering asset events.
        :param params: the run's params.
        """
        events = list((triggering_asset_events or {}).get(DAILY_IMAGES, []))
        if not events:
            raise AirflowSkipException(
                f"No {DAILY_IMAGES.name} events triggered this run; nothing to publish"
            )
        published_root = (params or {}).get("published_root") or None
        records = []
        for event in events:
            source = {
                "dag_id": event.source_dag_id,
                "run_id": event.source_run_id,
                "task_id": event.source_task_id,
                "timestamp": event.timestamp.isoformat() if event.timestamp else None,
            }
            log.info("Event from %s / %s: %s", event.source_dag_id, event.source_run_id, event.extra)
            records.append(publish_day(event.extra or {}, published_root=published_root, source=source))
        return records

    publish()
