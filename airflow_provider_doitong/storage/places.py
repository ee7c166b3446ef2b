"""A folder under ``output_path``, local or on object storage, and the only ways the provider writes there.

What each store gives:

- **Local**: every write is a uniquely named temporary file (``O_CREAT | O_EXCL | O_NOFOLLOW``),
  fsynced, renamed over its name, and the folder fsynced; no folder under ``output_path`` and no
  file is ever opened through a symlink (see :mod:`.local`). An exclusive create is a hard link of
  the synced temporary file: it fails if anything has the name.
- **S3** (``s3fs``): a write is one whole ``PutObject`` (an object is visible only once complete);
  an exclusive create is a ``PutObject`` with ``If-None-Match: *``, refused by the store itself
  if the key exists (AWS S3, MinIO and moto honour it).
- **Other object stores** (``fsspec``): one whole write; an exclusive create is what the file
  system's ``pipe_file(mode="create")`` gives: atomic where it supports it, else a check for the
  name then a write (two writers racing within that gap are not told apart).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec  # type: ignore[import-untyped]
from airflow.sdk import ObjectStoragePath

from airflow_provider_doitong.storage import local
from airflow_provider_doitong.storage.paths import is_local, shown


@dataclass(frozen=True)
class Place:
    """A folder: ``base`` (the user's folder, which may itself be a link) and ``parts`` under it.

    :param base: the folder the user gave, as an ``ObjectStoragePath``.
    :param parts: folders under it, each one plain name (made by the provider, never by an answer).
    """

    base: ObjectStoragePath
    parts: tuple[str, ...] = ()

    def child(self, *parts: str) -> Place:
        """The folder ``parts`` under this one."""
        return Place(self.base, (*self.parts, *parts))

    def path(self, name: str = "") -> ObjectStoragePath:
        """The ``ObjectStoragePath`` of ``name`` in this folder (the folder itself without a name)."""
        path = self.base
        for part in (*self.parts, name) if name else self.parts:
            path = path / part
        return path

    def shown(self, name: str = "") -> str:
        """``name`` in this folder as users write it (a plain local path or a URI)."""
        return shown(self.path(name))

    @property
    def local(self) -> bool:
        """Whether the folder is on the local file system."""
        return is_local(self.base)

    def _fs(self, name: str) -> tuple[Any, str]:
        path = self.path(name)
        try:
            fs = path.fs
        except ValueError:  # a scheme Airflow registers no file system for (``memory://``): fsspec's
            fs = fsspec.filesystem(path.protocol)
        return fs, path.path

    def write(self, name: str, data: bytes | Iterable[bytes]) -> None:
        """Replace ``name`` with ``data``, all of it or nothing (see the module's table).

        :param data: bytes, or chunks of them: written as they come locally (a big file is never
            held whole), joined into one whole write on object storage.
        """
        if self.local:
            local.write_atomic(self.base.path, self.parts, name, data)
        else:
            fs, key = self._fs(name)
            fs.pipe_file(key, data if isinstance(data, bytes) else b"".join(data))

    def create(self, name: str, data: bytes) -> bool:
        """Create ``name`` holding ``data`` unless it exists.

        :return: whether it was created (``False``: the name was taken, nothing changed).
        """
        if self.local:
            return local.create_exclusive(self.base.path, self.parts, name, data)
        fs, key = self._fs(name)
        try:
            fs.pipe_file(key, data, mode="create")
        except FileExistsError:
            return False
        return True

    def read(self, name: str) -> bytes | None:
        """The bytes of ``name``, or ``None`` if there is none (a local link is refused)."""
        if self.local:
            return local.read_file(self.base.path, self.parts, name)
        fs, key = self._fs(name)
        try:
            data: bytes = fs.cat_file(key)
        except FileNotFoundError:
            return None
        return data

    @contextlib.contextmanager
    def open_read(self, name: str) -> Iterator[BinaryIO | None]:
        """``name`` open for reading, streamed, or ``None`` if there is none (a local link is refused)."""
        if self.local:
            with local.open_read(self.base.path, self.parts, name) as stream:
                yield stream
            return
        fs, key = self._fs(name)
        try:
            handle = fs.open(key, "rb")
        except FileNotFoundError:
            yield None
            return
        with handle:
            yield handle

    def remove(self, name: str) -> None:
        """Remove ``name`` (a local link itself, never its target); a missing one is not an error."""
        if self.local:
            local.remove(self.base.path, self.parts, name)
            return
        fs, key = self._fs(name)
        try:
            fs.rm_file(key)
        except FileNotFoundError:
            return
