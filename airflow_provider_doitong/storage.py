"""Where a finished image is written: a local path or any ``ObjectStoragePath`` URI.

This module is the provider's only writer of images. Nothing from an API answer chooses a
destination: a job id becomes a file name only through
:func:`~airflow_provider_doitong.client.safety.safe_file_stem`, the path is checked to stay inside
the folder, and the extension comes from the image's own bytes, never from its URL.

``store_image(location, name, data)`` is the whole of it for callers (the operators); the pieces
(:func:`output_file`, :func:`write_image`) are public for callers that need the path first.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import PurePosixPath

from airflow.sdk import ObjectStoragePath

from airflow_provider_doitong.client.images import IMAGE_TYPES, check_image
from airflow_provider_doitong.client.safety import safe_file_stem

log = logging.getLogger(__name__)

LOCAL_PROTOCOLS = ("", "file", "local")


class UnsafeOutputPath(ValueError):
    """A file name that would leave its folder (never happens with names from :func:`output_file`)."""


def storage_path(location: str | ObjectStoragePath) -> ObjectStoragePath:
    """A local path (``~`` expanded, made absolute) or a URI, as an ``ObjectStoragePath``."""
    if isinstance(location, ObjectStoragePath):
        return location
    if "://" not in location:
        location = "file://" + os.path.abspath(os.path.expanduser(location))
    return ObjectStoragePath(location)


def is_local(path: ObjectStoragePath) -> bool:
    """Whether a path is on the local file system."""
    return path.protocol in LOCAL_PROTOCOLS


def shown(path: ObjectStoragePath) -> str:
    """A path as users write it: a plain local path, or the URI of an object store."""
    return path.path if is_local(path) else str(path)


def _is_folder(location: str | ObjectStoragePath, path: ObjectStoragePath) -> bool:
    text = location if isinstance(location, str) else str(location)
    return text.endswith("/") or path.is_dir()


def _check_inside(folder: ObjectStoragePath, candidate: ObjectStoragePath, file_name: str) -> None:
    """Verify that ``candidate`` is ``folder/file_name`` and nowhere else (symlinks resolved locally)."""
    if "/" in file_name or "\\" in file_name or file_name in ("", ".", ".."):
        raise UnsafeOutputPath(f"the file name {file_name!r} would leave {shown(folder)}")
    if is_local(folder):
        inside = os.path.realpath(candidate.parent.path) == os.path.realpath(folder.path)
    else:
        inside = str(candidate.parent).rstrip("/") == str(folder).rstrip("/")
    if not inside or candidate.name != file_name:
        raise UnsafeOutputPath(f"the file {file_name!r} would not be written inside {shown(folder)}")


def output_file(
    location: str | ObjectStoragePath, *, name: str, extension: str, folder: bool | None = None
) -> ObjectStoragePath:
    """The file an image goes to.

    A folder (``folder=True``, or the location ends with ``/`` or is an existing directory) gets
    ``<safe stem of name>.<extension>``, verified to stay inside it; anything else is the file
    itself, as the DAG's author wrote it.

    :param name: the job id (or the caller's item name); made safe, never trusted.
    :param extension: the file extension, from the image's bytes (``png``, ``jpg``, ``webp``).
    :raises UnsafeOutputPath: if the file would not be inside the folder.
    """
    path = storage_path(location)
    if not (folder if folder is not None else _is_folder(location, path)):
        return path
    if extension not in {kind.extension for kind in IMAGE_TYPES}:
        raise UnsafeOutputPath(f"{extension!r} is not an image extension")
    file_name = f"{safe_file_stem(name)}.{extension}"
    candidate = path / file_name
    _check_inside(path, candidate, file_name)
    return candidate


def resolve_output_path(
    location: str | ObjectStoragePath, *, job_id: str, data: bytes, folder: bool | None = None
) -> ObjectStoragePath:
    """The file a job's image goes to, its extension sniffed from ``data`` (see :func:`output_file`).

    :raises DoitongBadImage: if ``data`` is not a whole PNG, JPEG or WebP image.
    """
    kind = check_image(data)
    return output_file(location, name=job_id, extension=kind.extension, folder=folder)


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover (platforms without directory file descriptors)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover (file systems that refuse fsync on directories)
        pass
    finally:
        os.close(fd)


def _write_local(target: str, data: bytes) -> None:
    """Write beside the target, fsync, rename over it, fsync the folder: all of it or nothing."""
    folder = os.path.dirname(target)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(target)}.{uuid.uuid4().hex[:12]}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(folder)


def write_image(path: ObjectStoragePath, data: bytes) -> None:
    """Write bytes to a path, atomically: no reader ever sees a partial file under its name.

    Locally: a temporary file in the same folder, fsynced, renamed over the target, and the folder
    fsynced. In an object store: one write (S3, GCS and Azure make an object visible only once its
    upload completes).
    """
    if is_local(path):
        _write_local(path.path, data)
    else:
        path.write_bytes(data)


def store_image(
    location: str | ObjectStoragePath, name: str, data: bytes, *, folder: bool | None = None
) -> ObjectStoragePath:
    """Check that ``data`` is a whole image, choose its file, and write it atomically.

    :param location: a folder (``.../`` or an existing directory, or ``folder=True``) or a file,
        local or any ``ObjectStoragePath`` URI.
    :param name: the job id or item name a file in a folder is named after (made safe).
    :return: where the image went (:func:`shown` gives it as users write it).
    :raises DoitongBadImage: if ``data`` is not a whole PNG, JPEG or WebP image (nothing written).
    :raises UnsafeOutputPath: if the file would not be inside the folder (nothing written).
    """
    kind = check_image(data)
    path = output_file(location, name=name, extension=kind.extension, folder=folder)
    suffix = PurePosixPath(path.name).suffix.lstrip(".").lower()
    if suffix and suffix not in {kind.extension, "jpeg" if kind.extension == "jpg" else ""}:
        log.warning("Writing a %s image to %s, whose name says .%s", kind.name, shown(path), suffix)
    write_image(path, data)
    return path
