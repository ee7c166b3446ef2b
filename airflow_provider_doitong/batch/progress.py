"""Progress a person can follow: a batch's counts, credits and ETA, in the task log and as a snapshot.

Every :data:`~airflow_provider_doitong.batch.runner.PROGRESS_SECONDS` (and when the batch stops or
defers) the runner logs :func:`progress_line_of` and writes :func:`write_snapshot`: the manifest the
batch would write if it ended now, kept beside its ledger as ``progress.json`` (``manifest.json``
itself is written only when the batch ends). The Airflow UI's contact sheet shows it while the
batch runs (see :mod:`airflow_provider_doitong.ui`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from airflow_provider_doitong.batch import manifest
from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.ledger import ItemRecord, ItemState, Ledger
from airflow_provider_doitong.batch.ledger_manifest import json_chunks, ledger_head
from airflow_provider_doitong.batch.planner import Planner
from airflow_provider_doitong.batch.stores import ledger_parts
from airflow_provider_doitong.storage import Place, storage_path

log = logging.getLogger(__name__)

#: The snapshot's name, in the ledger's folder.
SNAPSHOT_NAME = "progress.json"
#: Item states counted as running: submitted (or being submitted), or completed and not yet stored.
RUNNING_STATES = frozenset({ItemState.SUBMITTING.value, ItemState.RUNNING.value, ItemState.COMPLETED.value})


@dataclass(frozen=True)
class Counts:
    """A batch's items by where they are; ``left`` is every item neither stored nor failed."""

    total: int
    stored: int
    running: int
    failed: int
    left: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def counts_of(states: Iterable[str]) -> Counts:
    """Count items by state (the ledger's or a manifest entry's ``status``).

    :param states: one state value per item.
    """
    found = [str(state) for state in states]
    stored = found.count(ItemState.STORED.value)
    failed = found.count(ItemState.FAILED.value)
    running = sum(1 for state in found if state in RUNNING_STATES)
    return Counts(
        total=len(found), stored=stored, running=running, failed=failed, left=len(found) - stored - failed
    )


def eta_seconds(*, remaining: int, running: int, concurrency: int, typical: float | None) -> float | None:
    """Roughly how long the rest of the batch takes: the running wave, then whole waves of the plan's slots.

    :param remaining: items not yet finished (running ones included).
    :param running: jobs running now.
    :param concurrency: the plan's job slots.
    :param typical: the typical job duration, if known.
    """
    if typical is None:
        return None
    if remaining <= 0:
        return 0.0
    waiting = max(0, remaining - running)
    return typical * (1 + math.ceil(waiting / max(1, concurrency)))


def credits_spent(records: Iterable[ItemRecord]) -> int:
    """Credits charged for the images completed so far (failed jobs are refunded)."""
    return sum(r.credits or 0 for r in records if r.state in (ItemState.COMPLETED, ItemState.STORED))


def clock_text(seconds: float) -> str:
    """``H:MM:SS``.

    :param seconds: a duration.
    """
    whole = int(round(seconds))
    return f"{whole // 3600:d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def progress_line(
    *,
    done: int,
    total: int,
    failed: int,
    running: int,
    credits: int,
    eta: float | None,
    left: int | None = None,
) -> str:
    """``12/30 done, 0 failed, 10 running, 18 left, 120 credits spent, ETA 0:00:40``.

    :param done: items stored.
    :param total: the batch's items.
    :param failed: items failed for good.
    :param running: jobs running now.
    :param credits: credits charged so far.
    :param eta: seconds left, if known.
    :param left: items neither stored nor failed (default: worked out from the others).
    """
    left = total - done - failed if left is None else left
    return (
        f"{done}/{total} done, {failed} failed, {running} running, {left} left, {credits} credits spent, "
        f"ETA {'unknown' if eta is None else clock_text(eta)}"
    )


def progress_line_of(ledger: Ledger, planner: Planner) -> str:
    """The progress line of a batch as its ledger and planner stand.

    :param planner: its planner (the plan's slots and the typical job duration).
    """
    counts = counts_of(record.state.value for record in ledger.records)
    eta = eta_seconds(
        remaining=counts.left,
        running=counts.running,
        concurrency=planner.limits.concurrency,
        typical=planner.typical_duration,
    )
    return progress_line(
        done=counts.stored,
        total=counts.total,
        failed=counts.failed,
        running=counts.running,
        left=counts.left,
        credits=credits_spent(ledger),
        eta=eta,
    )


def snapshot_path(folder: Any, owner: Mapping[str, Any]) -> Any:
    """Where a task instance's progress snapshot is: ``progress.json`` in its ledger's folder.

    :param folder: the batch's output folder (a path, a URI or an ``ObjectStoragePath``).
    :param owner: the task instance: ``dag_id``, ``run_id``, ``task_id``, ``map_index``.
    """
    path = storage_path(folder) if isinstance(folder, str) else folder
    for part in ledger_parts(
        dag_id=str(owner["dag_id"]),
        run_id=str(owner["run_id"]),
        task_id=str(owner["task_id"]),
        map_index=int(owner["map_index"]),
    ):
        path = path / part
    return path / SNAPSHOT_NAME


def snapshot(items: Sequence[BatchItem], ledger: Ledger) -> dict[str, Any]:
    """The batch as it stands: a manifest document (every item, whatever its state) with its counts."""
    records = ledger.records
    doc = manifest.build_manifest(
        manifest.entries_from_ledger(items, records),
        title="",
        credits_estimated=ledger.meta.get("credits_estimated"),
        source=ledger.meta.get("owner") or {},
    )
    doc["credits_spent"] = credits_spent(records)
    doc["progress"] = counts_of(record.state.value for record in records).as_dict()
    return doc


def write_snapshot(folder: Any, items: Sequence[BatchItem], ledger: Ledger) -> None:
    """Write the batch's progress snapshot beside its ledger; a failed write is logged, never raised.

    :param folder: the batch's output folder.
    """
    owner = ledger.meta.get("owner")
    if not owner:
        return
    try:
        path = snapshot_path(folder, owner)
        records = ledger.records
        head = ledger_head(
            records, title="", credits_estimated=ledger.meta.get("credits_estimated"), source=owner
        )
        head["credits_spent"] = credits_spent(records)
        head["progress"] = counts_of(record.state.value for record in records).as_dict()
        # an entry at a time, as the manifest: a million items are never all held
        entries = manifest.iter_entries_from_ledger(items, records)
        Place(path.parent).write(path.name, json_chunks(head, entries))
    except (OSError, ValueError) as exc:  # the batch goes on without it
        log.warning("Could not write the batch's progress snapshot: %s", exc)
