"""The account's spent request window, told to every process of one user on one host.

Each process learns the account's window from its own answers only, so one that has not asked lately
(a task just started, a trigger's first read, a batch that waited for its jobs) sends its request
into a window others have spent, and is refused. On one host it need not be: the first process whose
answer shows the window spent (``X-RateLimit-Remaining: 0``, or a 429 ``RATE_LIMITED``) writes when
it resets to a small file, and every process of the same user that uses the same account (base URL
and key) reads it before a request that counts toward the window, and holds the request until then
(:class:`~airflow_provider_doitong.client.errors.DoitongRateLimited`, never sent). Processes on
other hosts learn as before, from their own answers.

The file is advisory and untrusted: a folder that is not the user's own and private (checked at
each read and write: a temporary folder may be cleaned and taken by someone else), a file that is
not the user's own and private, a symlink, not a regular file, too large, torn or not as written,
or that says something impossible (a reset more than a window after it was seen, a sighting from
the future or from a window ago) holds nothing. Its name is a keyed hash of the account, which the
key cannot be recovered from. A read is a few system calls on a file of a few dozen bytes, made in
the caller's thread (the triggerer's event loop too, where it costs microseconds); a write, once a
window, is a new file renamed over the old.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from airflow_provider_doitong.client.contract import RATE_LIMIT_WINDOW_SECONDS

#: The environment variable naming the folder of the boards (by default ``doitong-board-<uid>`` in the
#: system's temporary folder); ``off`` turns the board off.
BOARD_DIR_ENV = "DOITONG_BOARD_DIR"
#: The largest board file read (bytes).
MAX_BOARD_BYTES = 256
_FORMAT = 1

log = logging.getLogger(__name__)
_refused_folders: set[Path] = set()


def default_directory() -> Path | None:
    """The boards' folder: :data:`BOARD_DIR_ENV`, else one per user in the temporary folder."""
    named = os.environ.get(BOARD_DIR_ENV, "")
    if named.lower() == "off":
        return None
    return Path(named) if named else Path(tempfile.gettempdir()) / f"doitong-board-{os.getuid()}"


def _private(info: os.stat_result) -> bool:
    return info.st_uid == os.getuid() and not info.st_mode & 0o077


def private_directory(path: Path, *, create: bool = True) -> bool:
    """Whether ``path`` is a real folder of this user's that no one else may write or read (made so,
    mode 0700, when missing and ``create``)."""
    if create:
        with contextlib.suppress(FileExistsError, OSError):
            path.mkdir(mode=0o700, parents=False)
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and _private(info)


def board_folder(directory: Path | None = None) -> Path | None:
    """The boards' folder (``directory``, by default :func:`default_directory`), made if missing;
    ``None`` when boards are off or it is not a private folder of this user's (said once)."""
    folder = directory if directory is not None else default_directory()
    if folder is None:
        return None
    if not private_directory(folder):
        if folder not in _refused_folders:
            _refused_folders.add(folder)
            log.warning("No boards in %s: not a private folder of this user's", folder)
        return None
    return folder


def account_name(*, base_url: str, api_key: str) -> str:
    """An account's name on the boards: a keyed hash, which the key cannot be recovered from."""
    return hmac.new(api_key.encode(), base_url.encode(), hashlib.sha256).hexdigest()[:32]


def read_private_file(path: Path, max_bytes: int) -> bytes | None:
    """The bytes of ``path``, if it is a regular file of this user's, private, of at most
    ``max_bytes``, in a private folder of this user's (a symlink is never followed)."""
    if not private_directory(path.parent, create=False):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or not _private(info) or info.st_size > max_bytes:
            return None
        raw = os.read(fd, max_bytes + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return raw if len(raw) <= max_bytes else None


def write_private_file(path: Path, data: bytes) -> bool:
    """Replace ``path`` by a new private file holding ``data`` (renamed over it: whole or not at all
    for every reader, never written through a link), if its folder is a private one of this user's."""
    if not private_directory(path.parent, create=False):
        return False
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".board-")
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True


@dataclass(frozen=True)
class WindowBoard:
    """One account's board on this host.

    :param path: its file.
    :param window_s: the rate-limit window's length (seconds).
    """

    path: Path
    window_s: float = RATE_LIMIT_WINDOW_SECONDS

    @classmethod
    def for_account(cls, *, base_url: str, api_key: str, directory: Path | None = None) -> WindowBoard | None:
        """The account's board, or ``None`` when there is no private folder to keep it in.

        :param directory: the folder (by default :func:`default_directory`).
        """
        folder = board_folder(directory)
        if folder is None:
            return None
        name = account_name(base_url=base_url, api_key=api_key)
        return cls(path=folder / f"{name}.json")

    def spent_until(self, now: float) -> float | None:
        """When the window another process saw spent resets, if it has not yet (``now``: Unix time)."""
        seen = self._read()
        if seen is None:
            return None
        reset_at, seen_at = seen
        fresh = now - self.window_s <= seen_at <= now + 1.0
        believable = seen_at <= reset_at <= seen_at + self.window_s + 1.0
        return reset_at if fresh and believable and now < reset_at else None

    def post(self, reset_at: float, now: float) -> None:
        """Tell the others the window is spent until ``reset_at`` (kept if already told)."""
        told = self.spent_until(now)
        if told is not None and told >= reset_at - 0.5:
            return
        data = json.dumps({"format": _FORMAT, "reset_at": reset_at, "seen_at": now}).encode()
        write_private_file(self.path, data)

    def _read(self) -> tuple[float, float] | None:
        raw = read_private_file(self.path, MAX_BOARD_BYTES)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(value, dict) or value.get("format") != _FORMAT:
            return None
        times = [value.get("reset_at"), value.get("seen_at")]
        if not all(
            isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) for t in times
        ):
            return None
        return float(times[0]), float(times[1])  # type: ignore[arg-type]
