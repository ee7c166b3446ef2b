"""Where a finished image is written: a local path or any ``ObjectStoragePath`` URI."""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from airflow.sdk import ObjectStoragePath

DEFAULT_EXTENSION = "jpg"


def image_extension(url: str | None) -> str:
    """The file extension of an output URL (``jpg`` if it has none).

    :param url: the job's output URL.
    """
    suffix = PurePosixPath(urlsplit(url or "").path).suffix.lstrip(".").lower()
    return suffix if suffix.isalnum() and len(suffix) <= 5 else DEFAULT_EXTENSION


def _to_storage_path(location: str) -> ObjectStoragePath:
    if "://" not in location:
        location = "file://" + os.path.abspath(os.path.expanduser(location))
    return ObjectStoragePath(location)


def resolve_output_path(location: str, *, job_id: str, url: str | None) -> ObjectStoragePath:
    """The file an image goes to.

    A folder (the location ends with ``/`` or is an existing directory) gets ``<job_id>.<ext>``;
    anything else is the file itself.

    :param location: a local path or an ``ObjectStoragePath`` URI.
    :param job_id: the job, for the file name in a folder.
    :param url: the output URL, for the extension.
    """
    path = _to_storage_path(location)
    if location.endswith("/") or path.is_dir():
        return path / f"{job_id}.{image_extension(url)}"
    return path


def write_image(path: ObjectStoragePath, data: bytes) -> None:
    """Write an image, creating its folder where the store has folders.

    :param path: where.
    :param data: the image bytes.
    """
    if path.protocol in ("", "file", "local"):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.part"
        tmp.write_bytes(data)
        os.replace(tmp.path, path.path)
    else:
        path.write_bytes(data)
