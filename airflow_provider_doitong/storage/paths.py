"""Which file an image goes to: a local path or any ``ObjectStoragePath`` URI.

Nothing from an API answer chooses a destination: a job id becomes a file name only through
:func:`~airflow_provider_doitong.client.safety.safe_component`, the path is checked to stay inside
the folder, and the extension comes from the image's own bytes, never from its URL.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from airflow.sdk import ObjectStoragePath as ObjectStoragePath  # the one Airflow class storage/ uses

from airflow_provider_doitong.client.errors import UnsafeOutputPath as UnsafeOutputPath
from airflow_provider_doitong.client.images import IMAGE_TYPES
from airflow_provider_doitong.client.safety import safe_component

#: The protocols (URI schemes) of the local file system: what :func:`is_local` counts as local.
LOCAL_PROTOCOLS = ("", "file", "local")


@dataclass(frozen=True)
class Location:
    """A place in storage (an ``output_path``, a prompts file, a stored image), parsed once.

    Operators build it once from what the DAG says; storage, the manifest and lineage read it
    rather than parsing the text again.

    :param path: the place itself.
    :param shown: as users write it: a plain local path, or the URI of an object store.
    :param local: on the local file system (:func:`is_local`).
    :param folder: written as a folder (with a trailing ``/``); an existing directory is a folder too,
        which only the storage can tell (:func:`names_folder`).
    """

    path: ObjectStoragePath
    shown: str
    local: bool
    folder: bool = False

    @classmethod
    def of(cls, location: str | ObjectStoragePath | Location) -> Location:
        """A local path (``~`` expanded, made absolute), a URI or an ``ObjectStoragePath``, parsed."""
        if isinstance(location, Location):
            return location
        path = storage_path(location)
        return cls(
            path=path,
            shown=shown(path),
            local=is_local(path),
            folder=isinstance(location, str) and location.endswith("/"),
        )


def storage_path(location: str | ObjectStoragePath | Location) -> ObjectStoragePath:
    """A local path (``~`` expanded, made absolute) or a URI, as an ``ObjectStoragePath``."""
    if isinstance(location, Location):
        return location.path
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


def names_folder(location: str | ObjectStoragePath | Location, path: ObjectStoragePath | None = None) -> bool:
    """Whether ``location`` is a folder (ends with ``/`` or is an existing directory), not a file."""
    path = path if path is not None else storage_path(location)
    if isinstance(location, Location):
        return location.folder or path.is_dir()
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
    location: str | ObjectStoragePath | Location, *, name: str, extension: str, folder: bool | None = None
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
    if not (folder if folder is not None else names_folder(location, path)):
        return path
    if extension not in {kind.extension for kind in IMAGE_TYPES}:
        raise UnsafeOutputPath(f"{extension!r} is not an image extension")
    file_name = f"{safe_component(name)}.{extension}"
    candidate = path / file_name
    _check_inside(path, candidate, file_name)
    return candidate
