"""Where a batch writes: its output folder (local or object storage) and image files named by item."""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_provider_doitong.storage import write_image

#: Leading bytes of the image formats an API answer may carry, and their extensions.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)


class NotAnImage(ValueError):
    """Downloaded bytes that are no image format the batch stores."""


def image_extension(data: bytes) -> str:
    """The file extension the image's own bytes call for (never the URL's).

    :param data: the downloaded image.
    :raises NotAnImage: for anything that is not JPEG, PNG, GIF or WebP.
    """
    for magic, extension in _MAGIC:
        if data.startswith(magic):
            return extension
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    raise NotAnImage(f"the download is not an image ({len(data)} bytes starting {data[:8]!r})")


def output_folder(location: str) -> ObjectStoragePath:
    """A local path (``~`` expanded, made absolute) or an ``ObjectStoragePath`` URI, as a folder.

    :param location: the operator's ``output_path``.
    """
    if "://" not in location:
        location = "file://" + os.path.abspath(os.path.expanduser(location))
    return ObjectStoragePath(location.rstrip("/") or location)


def is_local(path: Any) -> bool:
    """Whether ``path`` is on the local file system.

    :param path: an ``ObjectStoragePath``.
    """
    return path.protocol in ("", "file", "local")


def display(path: Any) -> str:
    """A plain path for local files, the URI otherwise.

    :param path: an ``ObjectStoragePath``.
    """
    return str(path.path) if is_local(path) else str(path)


def store_image(folder: Any, stem: str, data: bytes) -> str:
    """Write an item's image as ``<stem>.<extension from its bytes>`` in ``folder``.

    :param folder: the output folder.
    :param stem: the item's file stem (made by the batch from the item number and its prompt).
    :param data: the image.
    :return: the file's name.
    :raises NotAnImage: if the bytes are not an image.
    """
    name = f"{stem}.{image_extension(data)}"
    write_image(folder / name, data)
    return name
