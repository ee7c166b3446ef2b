"""Finding a task instance's images from what Airflow keeps of it, never from a request.

The folder is the task instance's rendered ``output_path``. A batch's document is its
``manifest.json`` or its progress snapshot (whichever is newer), and only if it names that very
task instance as its source; a file is served only if that document lists it as stored, by a plain
name, and it resolves (symlinks included) to a file directly inside the folder. A single image is
the file the task's result names, only if it is the rendered ``output_path`` itself or directly
inside it. Nothing here imports FastAPI: :mod:`.app` maps :class:`NotFound` to a 404.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_doitong.batch import manifest, progress
from airflow_provider_doitong.client.downloads import DEFAULT_MAX_DOWNLOAD_BYTES
from airflow_provider_doitong.client.images import ImageType, sniff_image_type
from airflow_provider_doitong.storage import is_local, storage_path

#: The largest document (manifest or snapshot) read.
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024


class NotFound(LookupError):
    """Nothing to show for this request; the message says why (it names no path)."""


@dataclass(frozen=True)
class BatchDoc:
    """A batch's manifest or progress snapshot, and the folder its files are in.

    :param live: the progress snapshot (the batch had not ended when it was written).
    """

    doc: dict[str, Any]
    folder: Any
    live: bool


def _read(path: Any, cap: int) -> bytes:
    """A file's bytes; locally at most ``cap`` + 1 of them, and never through a symlink put in place
    after the checks. An object is read whole: every file read here was written by the task itself
    (images capped at the download limit)."""
    if is_local(path):
        fd = os.open(path.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            return handle.read(cap + 1)
    return bytes(path.read_bytes())


def _read_json(path: Any) -> dict[str, Any] | None:
    try:
        if not path.exists():
            return None
        data = _read(path, MAX_DOCUMENT_BYTES)
    except (OSError, ValueError):
        return None
    if len(data) > MAX_DOCUMENT_BYTES:
        return None
    try:
        found = json.loads(data.decode("utf-8"))
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _folder(output_path: Any) -> Any:
    if not isinstance(output_path, str) or not output_path.strip():
        raise NotFound(
            "this task instance has no rendered output_path: it is not a Doitong task, its output_path "
            "is not set, or Airflow no longer keeps its rendered fields"
        )
    return storage_path(output_path.strip())


def batch_doc(output_path: Any, owner: Mapping[str, Any]) -> BatchDoc:
    """The newest manifest or progress snapshot of a task instance's batch.

    :param output_path: the task instance's rendered ``output_path``.
    :param owner: the task instance: ``dag_id``, ``run_id``, ``task_id``, ``map_index``.
    :raises NotFound: if neither exists or belongs to this task instance.
    """
    folder = _folder(output_path)
    mine = dict(owner)
    found = []
    for live, path in (
        (False, folder / manifest.MANIFEST_NAME),
        (True, progress.snapshot_path(folder, mine)),
    ):
        doc = _read_json(path)
        if doc is not None and doc.get("format") == manifest.FORMAT and doc.get("source") == mine:
            found.append(BatchDoc(doc=doc, folder=folder, live=live))
    if not found:
        raise NotFound("this task instance has written no manifest yet")
    return max(found, key=lambda d: (str(d.doc.get("generated_at") or ""), not d.live))


#: Seconds a batch's document is reused for the image requests of one page (its thumbnails).
RECENT_SECONDS = 5.0
_RECENT_MAX = 64
_recent: dict[tuple[str, str], tuple[float, BatchDoc]] = {}


def recent_batch_doc(output_path: Any, owner: Mapping[str, Any]) -> BatchDoc:
    """:func:`batch_doc`, reused for :data:`RECENT_SECONDS`: a page's thumbnails read it once, not
    once each (on object storage, two requests each)."""
    key = (str(output_path), json.dumps(dict(owner), sort_keys=True))
    now = time.monotonic()
    hit = _recent.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    found = batch_doc(output_path, owner)
    if len(_recent) >= _RECENT_MAX:
        _recent.clear()
    _recent[key] = (now + RECENT_SECONDS, found)
    return found


def _safe_name(name: str) -> bool:
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and "\x00" not in name
    )


def _inside(folder: Any, path: Any) -> bool:
    """Whether ``path`` is a file directly inside ``folder`` (locally: after resolving symlinks)."""
    if is_local(folder):
        real = os.path.realpath(path.path)
        return os.path.dirname(real) == os.path.realpath(folder.path) and os.path.isfile(real)
    return str(path.parent).rstrip("/") == str(folder).rstrip("/")


def listed_file(batch: BatchDoc, name: str) -> Any:
    """The stored file ``name`` of a batch: listed as stored in its document, inside its folder.

    :raises NotFound: for any other name.
    """
    listed = {
        str(entry.get("file"))
        for entry in batch.doc.get("items") or []
        if isinstance(entry, Mapping) and entry.get("status") == manifest.STORED and entry.get("file")
    }
    if name not in listed or not _safe_name(name):
        raise NotFound("no such image in this task instance's manifest")
    path = batch.folder / name
    if not _inside(batch.folder, path):
        raise NotFound("no such image in this task instance's folder")
    return path


def single_image(output_path: Any, result: Any) -> Any:
    """The image a ``FluxGenerateOperator`` task instance stored: its result's ``output_path``, if it
    is the rendered ``output_path`` itself or directly inside that folder.

    :param result: the task instance's XCom return value.
    :raises NotFound: otherwise.
    """
    rendered = _folder(output_path)
    written = result.get("output_path") if isinstance(result, Mapping) else None
    if not isinstance(written, str) or not written:
        raise NotFound("this task instance stored no image")
    path = storage_path(written)
    if path.protocol != rendered.protocol:
        raise NotFound("this task instance's image is not under its output_path")
    if is_local(path):
        real = os.path.realpath(path.path)
        if real != os.path.realpath(rendered.path) and not _inside(rendered, path):
            raise NotFound("this task instance's image is not under its output_path")
        if not os.path.isfile(real):
            raise NotFound("this task instance's image is gone")
    elif str(path) != str(rendered) and not _inside(rendered, path):
        raise NotFound("this task instance's image is not under its output_path")
    return path


def read_image(path: Any) -> tuple[bytes, ImageType]:
    """An image's bytes and type (from the bytes themselves), at most the download cap.

    :raises NotFound: for a missing file, an over-large one or one that is not a PNG, JPEG or WebP.
    """
    try:
        data = _read(path, DEFAULT_MAX_DOWNLOAD_BYTES)
    except (OSError, ValueError):
        raise NotFound("the image cannot be read") from None
    kind = sniff_image_type(data) if len(data) <= DEFAULT_MAX_DOWNLOAD_BYTES else None
    if kind is None:
        raise NotFound("the file is not an image")
    return data, kind
