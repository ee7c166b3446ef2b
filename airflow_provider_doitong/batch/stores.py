"""Where a batch ledger lives: a local folder, or object storage; and the folder's name for a task instance.

Both stores write nothing that can be seen half-written: locally the snapshot is written to a
temporary file, synced and renamed over the old one, and journal records are appended with one
``write`` and synced; on object storage every write is one whole object (a PUT is atomic) and the
journal is a folder of segments named by their first sequence number. Each store says how many
objects its journal is (``journal_objects``): on object storage every one is a request whenever the
ledger is opened (each resume and retry), so the ledger folds them into its snapshot before they
pile up.
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

SNAPSHOT_NAME = "ledger.json"
JOURNAL_NAME = "ledger.journal.jsonl"
SEGMENTS_FOLDER = "ledger.journal"
#: The folder under ``output_path`` that holds the ledgers.
LEDGER_ROOT = ".doitong"


def safe_component(value: str) -> str:
    """A path component made of ``[A-Za-z0-9._-]``; anything else is replaced, and a digest keeps it unique.

    :param value: a dag id, run id or task id.
    """
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", value).strip(".") or "_"
    if cleaned == value:
        return value
    return f"{cleaned[:80]}-{hashlib.sha256(value.encode('utf-8')).hexdigest()[:8]}"


def ledger_parts(
    *, dag_id: str, run_id: str, task_id: str, map_index: int, region: str | None = None
) -> list[str]:
    """The ledger folder's path under ``output_path``, one component each.

    :param dag_id: the task instance's DAG.
    :param run_id: its run.
    :param task_id: its task.
    :param map_index: its map index (-1 when not mapped).
    :param region: its loop iteration or nested expansion, if any (``_compat.task_instance_region``).
    """
    task = safe_component(task_id) + (f".{map_index}" if map_index >= 0 else "")
    task += f".{safe_component(region)}" if region else ""
    return [LEDGER_ROOT, safe_component(dag_id), safe_component(run_id), task]


class LocalLedgerStore:
    """A ledger in a local folder: ``ledger.json`` replaced atomically, the journal appended and fsynced.

    :param folder: the ledger's folder (created on first write).
    """

    #: The journal is one file.
    journal_objects = 1

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.location = os.path.join(folder, SNAPSHOT_NAME)
        self._journal = os.path.join(folder, JOURNAL_NAME)
        self._fd: int | None = None

    def read_snapshot(self) -> str | None:
        try:
            with open(self.location, encoding="utf-8") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write_snapshot(self, text: str) -> None:
        os.makedirs(self.folder, exist_ok=True)
        tmp = f"{self.location}.part"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.location)
        _fsync_dir(self.folder)

    def read_journal(self) -> list[str]:
        try:
            with open(self._journal, encoding="utf-8", errors="replace") as handle:
                return handle.read().splitlines()
        except FileNotFoundError:
            return []

    def append_journal(self, text: str, *, seq: int) -> None:
        if self._fd is None:
            os.makedirs(self.folder, exist_ok=True)
            self._fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            _fsync_dir(self.folder)
        data = text.encode("utf-8")
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)

    def reset_journal(self) -> None:
        self.close()
        with open(self._journal, "w", encoding="utf-8") as handle:
            os.fsync(handle.fileno())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ObjectLedgerStore:
    """A ledger on object storage: each write is one whole object (a PUT is atomic).

    The journal is a folder of segments named by their first sequence number.

    :param folder: an ``ObjectStoragePath`` to the ledger's folder.
    """

    def __init__(self, folder: Any) -> None:
        self.folder = folder
        self.location = str(folder / SNAPSHOT_NAME)
        self._segments = folder / SEGMENTS_FOLDER
        #: Segments in the journal, as last listed and written by this store.
        self.journal_objects = 0

    def read_snapshot(self) -> str | None:
        path = self.folder / SNAPSHOT_NAME
        return path.read_text(encoding="utf-8") if path.exists() else None

    def write_snapshot(self, text: str) -> None:
        (self.folder / SNAPSHOT_NAME).write_text(text, encoding="utf-8")

    def _segment_paths(self) -> list[Any]:
        if not self._segments.exists():
            return []
        return sorted(p for p in self._segments.iterdir() if p.name.endswith(".jsonl"))

    def read_journal(self) -> list[str]:
        lines: list[str] = []
        paths = self._segment_paths()
        for path in paths:
            lines.extend(path.read_text(encoding="utf-8").splitlines())
        self.journal_objects = len(paths)
        return lines

    def append_journal(self, text: str, *, seq: int) -> None:
        (self._segments / f"{seq:012d}.jsonl").write_text(text, encoding="utf-8")
        self.journal_objects += 1

    def reset_journal(self) -> None:
        for path in self._segment_paths():
            path.unlink()
        self.journal_objects = 0

    def close(self) -> None:
        return None


def open_store(folder: Any, owner: dict[str, Any]) -> LocalLedgerStore | ObjectLedgerStore:
    """The store of a task instance's ledger under an output folder.

    :param folder: the output folder (an ``ObjectStoragePath``).
    :param owner: the task instance: ``dag_id``, ``run_id``, ``task_id``, ``map_index`` (and ``region``).
    """
    ledger_folder = folder
    for part in ledger_parts(**owner):
        ledger_folder = ledger_folder / part
    if ledger_folder.protocol in ("", "file", "local"):
        return LocalLedgerStore(str(ledger_folder.path))
    return ObjectLedgerStore(ledger_folder)
