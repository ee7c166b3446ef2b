"""Publishing a batch's folder: its verified images, manifest and contact sheet, copied elsewhere.

A folder is published only whole and only as its manifest describes it: every stored image is
checked against the manifest's SHA-256 before the first byte is written, so an altered or missing
image publishes nothing. The copy carries a ``publication.json`` record of what was published, from
where and from which run; publishing the same day again replaces the earlier publication's files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_provider_doitong.batch import manifest
from airflow_provider_doitong.storage import shown, storage_path, write_image

log = logging.getLogger(__name__)

#: Where a folder is published when no root is given: ``<folder>/../published/<day>/``.
PUBLISHED_DIR = "published"
#: The record written beside the published files.
PUBLICATION_RECORD = "publication.json"


class PublishRefused(ValueError):
    """The folder cannot be published as it stands (no manifest, an image missing or altered).

    Trying again changes nothing: an Airflow task should fail without retrying.
    """


def publish_folder(
    folder: Any,
    *,
    day: str | None = None,
    published_root: Any = None,
    source: Mapping[str, Any] | None = None,
    leave_out: Collection[str] = (),
) -> dict[str, Any]:
    """Publish a batch's folder to ``<published_root>/<day>/`` and return the publication record.

    :param folder: the batch's output folder (a local path, a URI or an ``ObjectStoragePath``).
    :param day: the publication's name; default the folder's name.
    :param published_root: where ``<day>/`` folders go; default ``published`` beside the folder.
    :param source: where the request came from (DAG, run, reviewer...), kept in the record.
    :param leave_out: file names of stored images not to publish (every one must be in the manifest,
        so that a typo cannot publish the image it meant to leave out).
    :raises PublishRefused: no manifest, an image missing or altered, or an unknown name to leave out.
    """
    folder = storage_path(str(folder))
    day = day or folder.name
    doc = manifest.read_manifest(folder)
    if doc is None:
        raise PublishRefused(f"{shown(folder)} holds no {manifest.MANIFEST_NAME}")
    problems = manifest.verify_manifest(folder)
    if problems:
        raise PublishRefused(f"The images of {day} do not match their manifest: {'; '.join(problems)}")
    stored = [entry["file"] for entry in doc.get("items", []) if entry.get("status") == manifest.STORED]
    unknown = sorted(set(leave_out) - set(stored))
    if unknown:
        raise PublishRefused(f"Not stored images of {day}, nothing published: {', '.join(unknown)}")
    published = [name for name in stored if name not in set(leave_out)]
    names = [*published, manifest.MANIFEST_NAME]
    if (folder / manifest.CONTACT_SHEET_NAME).exists():
        names.append(manifest.CONTACT_SHEET_NAME)
    target = (storage_path(str(published_root)) if published_root else folder.parent / PUBLISHED_DIR) / day
    for name in names:
        write_image(target / name, (folder / name).read_bytes())
    record = {
        "date": day,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "folder": shown(target),
        "source_folder": shown(folder),
        "image_count": len(published),
        "left_out": sorted(leave_out),
        "credits_spent": doc.get("credits_spent"),
        "files": sorted(names),
        "source": dict(source or {}),
    }
    write_image(target / PUBLICATION_RECORD, json.dumps(record, indent=2).encode("utf-8"))
    log.info("Published %d images of %s from %s to %s", len(published), day, shown(folder), shown(target))
    return record
