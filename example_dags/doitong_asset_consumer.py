"""
### Doitong: publish the day's images

Runs whenever `doitong_daily_prompt_batch` updates the `doitong_daily_images` asset. For every
triggering event it reads the event's extra (the batch's summary: folder, manifest, counts), checks
every stored image against the manifest's SHA-256, and publishes the day: the images, `manifest.json`
and `index.html` are copied to `<output root>/published/<day folder>/` (beside the dated folders, or
under the `published_root` param) together with a `publication.json` record of what was published,
from which run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException
from airflow.sdk import DAG, Asset, ObjectStoragePath, Param, task

from airflow_provider_doitong.storage import write_image

log = logging.getLogger(__name__)

DAG_ID = "doitong_asset_consumer"
#: The asset ``doitong_daily_prompt_batch`` updates (the same name there).
DAILY_IMAGES = Asset(name="doitong_daily_images")
PUBLISHED_DIR = "published"
PUBLICATION_RECORD = "publication.json"
EXTRA_KEYS = ("folder", "manifest")


def _path(location: str) -> ObjectStoragePath:
    if "://" in location:
        return ObjectStoragePath(location)
    return ObjectStoragePath("file://" + os.path.abspath(os.path.expanduser(location)))


def _shown(path: ObjectStoragePath) -> str:
    return path.path if path.protocol in ("", "file", "local") else str(path)


def publish_day(
    extra: Mapping[str, Any], *, published_root: str | None = None, source: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Publish one day's images, as announced by a ``doitong_daily_images`` event.

    Every image is checked against the manifest's SHA-256 before anything is written; publishing
    the same day again replaces the earlier publication's files.

    :param extra: the event's extra: ``folder`` and ``manifest`` (absolute paths or URIs); the day is
        its ``date`` if given, else the folder's name.
    :param published_root: where ``<date>/`` folders are published; default ``<folder>/../published``.
    :param source: where the event came from (DAG, run, timestamp), for the record.
    :return: the publication record, also written as ``publication.json``.
    :raises AirflowFailException: if the extra is incomplete or an image is missing or altered.
    """
    missing = [key for key in EXTRA_KEYS if not extra.get(key)]
    if missing:
        raise AirflowFailException(f"The asset event's extra lacks {', '.join(missing)}: {dict(extra)!r}")
    folder = _path(str(extra["folder"]))
    day = str(extra.get("date") or folder.name)
    manifest_path = _path(str(extra["manifest"]))
    try:
        manifest_bytes = manifest_path.read_bytes()
    except FileNotFoundError:
        raise AirflowFailException(f"The manifest {_shown(manifest_path)} does not exist") from None
    manifest = json.loads(manifest_bytes)
    root = _path(published_root) if published_root else folder.parent / PUBLISHED_DIR
    target = root / day

    files: dict[str, bytes] = {}
    stored = [entry for entry in manifest.get("items", []) if entry.get("status") == "stored"]
    for image in stored:
        name = str(image["file"])
        if posixpath.basename(name) != name or name in ("", ".", ".."):
            raise AirflowFailException(f"The manifest names a file outside its folder: {name!r}")
        try:
            data = (folder / name).read_bytes()
        except FileNotFoundError:
            raise AirflowFailException(f"Image {name} of {day} is missing from {_shown(folder)}") from None
        if hashlib.sha256(data).hexdigest() != image["sha256"]:
            raise AirflowFailException(f"Image {name} of {day} does not match its manifest SHA-256")
        files[name] = data
    files[manifest_path.name] = manifest_bytes
    sheet = extra.get("contact_sheet")
    if sheet and _path(str(sheet)).exists():
        files[_path(str(sheet)).name] = _path(str(sheet)).read_bytes()

    for name, data in files.items():
        write_image(target / name, data)
    record = {
        "date": day,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "folder": _shown(target),
        "source_folder": _shown(folder),
        "image_count": len(stored),
        "credits_spent": manifest.get("credits_spent"),
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
    schedule=[DAILY_IMAGES],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["doitong", "example"],
    doc_md=__doc__,
    params={
        "published_root": Param(
            "",
            type="string",
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
