"""A batch ledger's item records: each item's state and what is known of its jobs and image.

A ledger holds a record object only for an item no longer pristine (pending, never changed);
:class:`RecordView` shows them all as one sequence, building a pristine item's when asked for.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, overload

from airflow_provider_doitong.batch.ledger_values import EARLIER_NAMES, checked_fields


class ItemState(str, enum.Enum):
    """Where an item is: ``pending`` -> ``submitting`` -> ``running`` -> ``completed`` -> ``stored``.

    A failed job sends its item back to ``pending`` while it has retries left, else to ``failed``.
    This is the item's state, not its job's :class:`~airflow_provider_doitong.client.contract.JobStatus`
    (which the runner reads): ``completed`` here means the job completed and its image is still to
    be stored, and ``failed`` that the item has no retry left.
    """

    PENDING = "pending"
    SUBMITTING = "submitting"
    RUNNING = "running"
    COMPLETED = "completed"
    STORED = "stored"
    FAILED = "failed"


@dataclass(slots=True)
class ItemRecord:
    """What the ledger knows about one item.

    :param attempts: submissions of this item that may have created a job (refused ones excluded).
    :param failures: failed jobs (or ambiguous submissions) in the current task try.
    :param job_ids: every job created for the item, oldest first, so an audit sees any second charge.
    :param submitted_at: Unix time (the worker's clock) the current job's id was recorded.
    :param ambiguous: submissions whose answer was never recorded (each may have been charged);
        ledgers written before this name hold it as ``unconfirmed``, read the same.
    :param cached: the stored image was copied from the image cache (``job_id`` names the job, of
        any run, that made it; ``credits`` is 0), even if jobs of its own failed before
        (``job_ids``). Ledgers written before this field mark such an item by an empty ``job_ids``.
    """

    index: int
    key: str
    state: ItemState = ItemState.PENDING
    attempts: int = 0
    failures: int = 0
    job_id: str | None = None
    job_ids: list[str] = field(default_factory=list)
    submitted_at: float | None = None
    credits: int | None = None
    duration: float | None = None
    completed_at: str | None = None
    file: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    error: str | None = None
    ambiguous: int = 0
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "key": self.key, "state": self.state.value}
        for name in _OPTIONAL_FIELDS:
            value = getattr(self, name)
            if value not in (None, [], 0):  # (``False`` too)
                out[name] = list(value) if name == "job_ids" else value
        return out

    @property
    def from_cache(self) -> bool:
        """Stored from the image cache (0 credits), by the field or, in an older ledger, by having no job."""
        return (
            self.state is ItemState.STORED and self.job_id is not None and (self.cached or not self.job_ids)
        )

    @property
    def pristine(self) -> bool:
        """Pending and never changed: what the ledger implies for an item it holds no record of."""
        return self.state is ItemState.PENDING and all(
            getattr(self, name) in (None, [], 0) for name in _OPTIONAL_FIELDS
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ItemRecord:
        """A record read back from a ledger, every value checked (unknown keys are left out).

        :raises ValueError: (or ``TypeError``) for a value no ledger holds.
        """
        known = {f.name for f in fields(cls)} | set(EARLIER_NAMES)
        values = checked_fields({k: v for k, v in data.items() if k in known}, state=ItemState)
        for key in ("index", "key"):
            if key not in values:
                raise ValueError(f"an item without its {key}")
        return cls(**values)


_OPTIONAL_FIELDS = tuple(f.name for f in fields(ItemRecord) if f.name not in ("index", "key", "state"))


class _RecordSource(Protocol):
    @property
    def total(self) -> int: ...

    def __iter__(self) -> Iterator[ItemRecord]: ...

    def _record(self, index: int) -> ItemRecord: ...


class RecordView(Sequence[ItemRecord]):
    """A ledger's records as a sequence (see :attr:`Ledger.records`)."""

    def __init__(self, ledger: _RecordSource) -> None:
        self._ledger = ledger

    def __len__(self) -> int:
        return self._ledger.total

    @overload
    def __getitem__(self, index: int) -> ItemRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[ItemRecord]: ...

    def __getitem__(self, index: int | slice) -> ItemRecord | list[ItemRecord]:
        if isinstance(index, slice):
            return [self._ledger._record(i) for i in range(*index.indices(len(self)))]
        return self._ledger._record(index + len(self) if index < 0 else index)

    def __iter__(self) -> Iterator[ItemRecord]:
        return iter(self._ledger)
