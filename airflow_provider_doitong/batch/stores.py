"""Where a batch ledger lives: a local folder, or object storage; and the folder's name for a task instance.

Every write goes through :mod:`airflow_provider_doitong.storage` (see its table of what each
store gives): the snapshot is replaced whole; locally the journal is one file appended with one
``write`` and synced, opened ``O_NOFOLLOW | O_APPEND``, and no folder of the ledger may be a
symlink; on object storage the journal is a folder of segments (whole objects) named by their
first sequence number. Each store says how many objects its journal is (``journal_objects``): on
object storage every one is a request whenever the ledger is opened (each resume and retry), so
the ledger folds them into its snapshot before they pile up.
"""

from __future__ import annotations

import os
from typing import Any

from airflow_provider_doitong.client.safety import safe_component
from airflow_provider_doitong.storage import Place, is_local, storage_path
from airflow_provider_doitong.storage import local as local_files
from airflow_provider_doitong.storage.claims import PROVIDER_FOLDER

SNAPSHOT_NAME = "ledger.json"
JOURNAL_NAME = "ledger.journal.jsonl"
SEGMENTS_FOLDER = "ledger.journal"
#: The folder under ``output_path`` that holds the ledgers.
LEDGER_ROOT = PROVIDER_FOLDER

__all__ = [
    "JOURNAL_NAME",
    "LEDGER_ROOT",
    "SEGMENTS_FOLDER",
    "SNAPSHOT_NAME",
    "LocalLedgerStore",
    "ObjectLedgerStore",
    "ledger_parts",
    "open_store",
    "safe_component",
]


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

    :param folder: the output folder (or, without ``parts``, the ledger's own folder).
    :param parts: the ledger's folders under ``folder`` (created on first write, none a symlink).
    """

    #: The journal is one file.
    journal_objects = 1

    def __init__(self, folder: str, parts: tuple[str, ...] | list[str] = ()) -> None:
        self._root = folder
        self._parts = tuple(parts)
        self._place = Place(storage_path(folder), self._parts)
        self.folder = os.path.join(folder, *self._parts)
        self.location = os.path.join(self.folder, SNAPSHOT_NAME)
        self.journal_location = os.path.join(self.folder, JOURNAL_NAME)
        self._fd: int | None = None

    def read_snapshot(self) -> str | None:
        data = self._place.read(SNAPSHOT_NAME)
        return None if data is None else data.decode("utf-8", errors="replace")

    def write_snapshot(self, text: str) -> None:
        self._place.write(SNAPSHOT_NAME, text.encode("utf-8"))

    def read_journal(self) -> bytes:
        return self._place.read(JOURNAL_NAME) or b""

    def cut_journal(self, size: int) -> None:
        """Cut the journal to its first ``size`` bytes (a torn last record) and sync it."""
        self.close()
        local_files.truncate(self._root, self._parts, JOURNAL_NAME, size)

    def append_journal(self, text: str, *, seq: int) -> None:
        if self._fd is None:
            self._fd = local_files.open_append(self._root, self._parts, JOURNAL_NAME)
        local_files.append(self._fd, text.encode("utf-8"))

    def reset_journal(self) -> None:
        self.close()
        self._place.write(JOURNAL_NAME, b"")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ObjectLedgerStore:
    """A ledger on object storage: each write is one whole object.

    The journal is a folder of segments named by their first sequence number.

    :param folder: an ``ObjectStoragePath`` to the ledger's folder.
    """

    def __init__(self, folder: Any) -> None:
        self.folder = folder
        self._place = Place(folder)
        self.location = str(folder / SNAPSHOT_NAME)
        self.journal_location = str(folder / SEGMENTS_FOLDER)
        self._segments = folder / SEGMENTS_FOLDER
        self._sizes: list[tuple[str, int]] = []
        #: Segments in the journal, as last listed and written by this store.
        self.journal_objects = 0

    def read_snapshot(self) -> str | None:
        data = self._place.read(SNAPSHOT_NAME)
        return None if data is None else data.decode("utf-8", errors="replace")

    def write_snapshot(self, text: str) -> None:
        self._place.write(SNAPSHOT_NAME, text.encode("utf-8"))

    def _segment_names(self) -> list[str]:
        if not self._segments.exists():
            return []
        return sorted(p.name for p in self._segments.iterdir() if p.name.endswith(".jsonl"))

    def read_journal(self) -> bytes:
        segments = self._place.child(SEGMENTS_FOLDER)
        chunks: list[bytes] = []
        self._sizes = []
        for name in self._segment_names():
            data = segments.read(name) or b""
            if data and not data.endswith(b"\n"):  # whole objects: never a record glued to the next
                data += b"\n"
            chunks.append(data)
            self._sizes.append((name, len(data)))
        self.journal_objects = len(self._sizes)
        return b"".join(chunks)

    def cut_journal(self, size: int) -> None:
        """Keep the journal's first ``size`` bytes (as last read): the segment holding the cut is
        rewritten, later ones removed."""
        segments = self._place.child(SEGMENTS_FOLDER)
        start = 0
        for name, length in self._sizes:
            if start + length > size:
                keep = size - start
                if keep > 0:
                    data = segments.read(name) or b""
                    if keep < len(data):
                        segments.write(name, data[:keep])
                else:
                    segments.remove(name)
                    self.journal_objects -= 1
            start += length

    def append_journal(self, text: str, *, seq: int) -> None:
        self._place.child(SEGMENTS_FOLDER).write(f"{seq:012d}.jsonl", text.encode("utf-8"))
        self.journal_objects += 1

    def reset_journal(self) -> None:
        segments = self._place.child(SEGMENTS_FOLDER)
        for name in self._segment_names():
            segments.remove(name)
        self.journal_objects = 0

    def close(self) -> None:
        return None


def open_store(folder: Any, owner: dict[str, Any]) -> LocalLedgerStore | ObjectLedgerStore:
    """The store of a task instance's ledger under an output folder.

    :param folder: the output folder (an ``ObjectStoragePath``).
    :param owner: the task instance: ``dag_id``, ``run_id``, ``task_id``, ``map_index`` (and ``region``).
    """
    parts = ledger_parts(**owner)
    if is_local(folder):
        return LocalLedgerStore(str(folder.path), parts)
    ledger_folder = folder
    for part in parts:
        ledger_folder = ledger_folder / part
    return ObjectLedgerStore(ledger_folder)
