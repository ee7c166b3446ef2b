"""The local file system's primitives: every write atomic, every name opened without following a link.

A place is ``(root, parts, name)``: ``root`` is the folder the user gave (``output_path``; it may
itself be a symlink, the user's choice), ``parts`` the folders under it (``.doitong/<dag>/...``) and
``name`` one file in the last of them. Each part is opened relative to its parent's descriptor with
``O_NOFOLLOW | O_DIRECTORY`` (created when missing), so no folder under ``root`` can be a symlink
planted to send a write elsewhere, and nothing can swap one in between the check and the write.
Files are opened with ``O_NOFOLLOW`` too; temporary files get a unique name created with
``O_CREAT | O_EXCL``; a write is: temporary file, fsync, rename, fsync of the folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from airflow_provider_doitong.storage.paths import UnsafeOutputPath

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC


class UnsafeFolder(UnsafeOutputPath):
    """A symlink (or a file) where the provider's folder or file must be: nothing was written."""


def _where(root: str, parts: Sequence[str], name: str = "") -> str:
    return os.path.join(root, *parts, name) if name else os.path.join(root, *parts)


@contextlib.contextmanager
def folder_fd(root: str, parts: Sequence[str] = (), *, create: bool) -> Iterator[int]:
    """A descriptor of ``root/parts...``, no part a symlink.

    :param create: make missing folders (``root`` with its parents).
    :raises FileNotFoundError: if a folder is missing and ``create`` is false.
    :raises UnsafeFolder: if a part under ``root`` is a symlink or not a folder.
    """
    if create:
        os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for depth, part in enumerate(parts):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
            try:
                child = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeFolder(
                        f"{_where(root, parts[: depth + 1])} is a symlink or a file, not a folder; "
                        "the provider never writes through a link. Remove it"
                    ) from None
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _unsafe_file(exc: OSError, where: str) -> Exception:
    if exc.errno == errno.ELOOP:
        return UnsafeFolder(f"{where} is a symlink; the provider never writes through a link. Remove it")
    return exc


def _write_temporary(fd: int, name: str, data: bytes | Iterable[bytes]) -> str:
    """Write ``data`` (bytes, or chunks of them) to a new, uniquely named file beside ``name``,
    synced; return its name."""
    tmp = f".{name[:100]}.{uuid.uuid4().hex[:12]}.part"
    out = os.open(tmp, _NEW, 0o666, dir_fd=fd)
    try:
        for chunk in (data,) if isinstance(data, bytes) else data:
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
        os.fsync(out)
    except BaseException:
        os.close(out)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)
        raise
    os.close(out)
    return tmp


def _fsync(fd: int) -> None:
    with contextlib.suppress(OSError):  # file systems that refuse fsync on folders
        os.fsync(fd)


def write_atomic(root: str, parts: Sequence[str], name: str, data: bytes | Iterable[bytes]) -> None:
    """Replace ``name`` with ``data`` (bytes, or chunks of them written as they come), all or
    nothing: a link at ``name`` is replaced, never followed."""
    with folder_fd(root, parts, create=True) as fd:
        tmp = _write_temporary(fd, name, data)
        try:
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=fd)
            raise
        _fsync(fd)


def create_exclusive(root: str, parts: Sequence[str], name: str, data: bytes) -> bool:
    """Create ``name`` holding ``data`` unless something (a file, a link) is there already.

    The file appears whole or not at all (a hard link of a synced temporary file; where the file
    system has no hard links, an ``O_EXCL`` create written in place).

    :return: whether it was created (``False``: the name was taken; nothing was changed).
    """
    with folder_fd(root, parts, create=True) as fd:
        tmp = _write_temporary(fd, name, data)
        try:
            os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            return _create_in_place(fd, name, data)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=fd)
        _fsync(fd)
        return True


def _create_in_place(fd: int, name: str, data: bytes) -> bool:
    try:
        out = os.open(name, _NEW, 0o666, dir_fd=fd)
    except FileExistsError:
        return False
    try:
        os.write(out, data)
        os.fsync(out)
    finally:
        os.close(out)
    _fsync(fd)
    return True


def read_file(root: str, parts: Sequence[str], name: str) -> bytes | None:
    """The bytes of ``name``, or ``None`` if it (or its folder) does not exist; links are refused."""
    with open_read(root, parts, name) as stream:
        return None if stream is None else stream.read()


@contextlib.contextmanager
def open_read(root: str, parts: Sequence[str], name: str) -> Iterator[BinaryIO | None]:
    """``name`` open for reading (streamed), or ``None`` if it (or its folder) does not exist; links
    are refused."""
    try:
        with folder_fd(root, parts, create=False) as fd:
            try:
                handle = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise _unsafe_file(exc, _where(root, parts, name)) from None
    except FileNotFoundError:
        yield None
        return
    with os.fdopen(handle, "rb") as stream:
        yield stream


def open_append(root: str, parts: Sequence[str], name: str) -> int:
    """A descriptor appending to ``name`` (created when missing, never through a link), synced on creation."""
    with folder_fd(root, parts, create=True) as fd:
        try:
            out = os.open(
                name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o644, dir_fd=fd
            )
        except OSError as exc:
            raise _unsafe_file(exc, _where(root, parts, name)) from None
        _fsync(fd)
        return out


def append(out: int, data: bytes) -> None:
    """Append all of ``data`` to a descriptor from :func:`open_append` and sync it."""
    view = memoryview(data)
    while view:
        view = view[os.write(out, view) :]
    os.fsync(out)


def truncate(root: str, parts: Sequence[str], name: str, size: int) -> None:
    """Cut ``name`` to its first ``size`` bytes and sync it (a link is refused)."""
    with folder_fd(root, parts, create=False) as fd:
        try:
            out = os.open(name, os.O_WRONLY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
        except OSError as exc:
            raise _unsafe_file(exc, _where(root, parts, name)) from None
        try:
            os.ftruncate(out, size)
            os.fsync(out)
        finally:
            os.close(out)


def remove(root: str, parts: Sequence[str], name: str) -> None:
    """Remove ``name`` (a link itself, never its target); a missing file is not an error."""
    try:
        with folder_fd(root, parts, create=False) as fd:
            os.unlink(name, dir_fd=fd)
            _fsync(fd)
    except FileNotFoundError:
        return
