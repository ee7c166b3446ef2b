"""The batch ledger: every item's state, job ids, file and checksum, kept durably under ``output_path``.

The ledger is how a batch survives a retry, a worker crash or a deferral on any Airflow version:
it lives at a place fixed by the task instance (``<output_path>/.doitong/<dag>/<run>/<task>/``),
so the next try finds it. It is a snapshot (``ledger.json``) plus a journal of changes since the
snapshot. Nothing is ever half-written: the snapshot is replaced atomically (a temporary file
renamed over it locally, one PUT on object storage); journal records are appended and synced
(locally) or written as whole new objects (object storage), and a torn last line is ignored. The
journal is folded into a new snapshot once it outgrows it, so writing a batch of N items costs
O(N) bytes in all; and once it is made of more than :data:`MAX_JOURNAL_OBJECTS` objects (object
storage writes one per flush), so opening the ledger reads a bounded number of them.

An item still pending and never changed has no record, in memory or in the snapshot (which lists
every item's key once, then the other items' records): a million new items cost their keys, 6 MB,
and the first write is a few MB, not a record each.

An item is recorded ``submitting`` before its POST and ``running`` with its job id right after
the answer, before anything else happens to it: an item found ``submitting`` on a retry may have
been charged without its answer being recorded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from airflow_provider_doitong.batch.item_list import BatchItem, ItemList
from airflow_provider_doitong.batch.ledger_records import ItemRecord as ItemRecord
from airflow_provider_doitong.batch.ledger_records import ItemState as ItemState
from airflow_provider_doitong.batch.ledger_records import RecordView
from airflow_provider_doitong.batch.ledger_values import (
    ItemKeys,
    checked_fields,
    checked_meta,
    count,
    journal_lines,
    typed,
)

FORMAT = "doitong-batch-ledger"
#: Version 2 lists the items' keys in one string and only the records of items no longer pristine
#: (pending, never changed: implied); version 1 (still read) listed a record for every item.
VERSION = 2
READABLE_VERSIONS = (1, 2)
#: The journal is folded into the snapshot once it holds more than this and more than the snapshot.
COMPACT_MIN_BYTES = 256 * 1024
#: ... and once it is made of more objects than this: on object storage each is one request
#: whenever the ledger is opened (every resume of a deferrable batch, every retry).
MAX_JOURNAL_OBJECTS = 32

log = logging.getLogger(__name__)


class LedgerError(RuntimeError):
    """The ledger cannot be used as it is (another batch's, or damaged); the message says what to do."""


class LedgerStore(Protocol):
    """Where a ledger's snapshot and journal live."""

    location: str
    journal_location: str
    #: How many objects the journal is made of (each a read when the ledger is opened).
    journal_objects: int

    def read_snapshot(self) -> str | None: ...

    def write_snapshot(self, text: str) -> None: ...

    def read_journal(self) -> bytes: ...

    def cut_journal(self, size: int) -> None: ...

    def append_journal(self, text: str, *, seq: int) -> None: ...

    def reset_journal(self) -> None: ...

    def close(self) -> None: ...


class Ledger:
    """The items' records in memory, with changes journaled to a :class:`LedgerStore`.

    Changes are buffered by :meth:`update` and made durable, in order, by :meth:`flush`. An item
    still pending and never changed has no record object (a million pending items cost their keys,
    6 MB, not a million objects): :attr:`records` builds one when it is asked for.
    """

    def __init__(
        self,
        store: LedgerStore,
        *,
        meta: dict[str, Any],
        records: Sequence[ItemRecord] = (),
        seq: int,
        keys: ItemKeys | None = None,
    ) -> None:
        """:param records: every item's record, in order (``keys`` ``None``), or the records of
        items no longer pristine (``keys`` given: the items' keys, which set how many there are)."""
        self.store = store
        self.meta = meta
        self._keys = keys if keys is not None else ItemKeys.of(record.key for record in records)
        self._records: dict[int, ItemRecord] = {}
        self._seq = seq
        self._buffer: list[dict[str, Any]] = []
        self._journal_bytes = 0
        self._snapshot_bytes = 0
        self._persisted = True
        #: The items in each state but ``pending`` (pending: every other item).
        self._by_state: dict[ItemState, set[int]] = {state: set() for state in ItemState}
        for record in records:
            if not record.pristine:
                self._records[record.index] = record
                if record.state is not ItemState.PENDING:
                    self._by_state[record.state].add(record.index)

    # --- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, store: LedgerStore, *, items: Sequence[BatchItem] | None, owner: dict[str, Any]) -> Ledger:
        """Load the ledger from ``store``, or start one for ``items``.

        A torn last journal record (a write cut short by a crash or a full disk) is cut away, with
        a warning, before anything is appended: it was never acknowledged, so nothing followed it.

        :param store: where it lives.
        :param items: the batch's items, which must be those the ledger was written for; ``None``
            to check them later (:meth:`check_items`), once the ledger says where they were saved.
        :param owner: the task instance (dag_id, run_id, task_id, map_index), checked on load.
        :raises LedgerError: if the ledger belongs to another task instance, was written for other
            items, is damaged (anywhere but its last record) or holds a value no ledger holds.
        """
        snapshot = store.read_snapshot()
        journal = store.read_journal()
        if snapshot is None and not journal:
            keys = _keys_of(items or ())
            ledger = cls(store, meta={"owner": dict(owner), "items": len(keys)}, seq=0, keys=keys)
            ledger._persisted = False  # written by the first flush: a refused batch leaves no file
            return ledger
        lines, whole = journal_lines(journal)
        if whole < len(journal):
            log.warning(
                "The batch ledger's journal %s ends with a torn record (%d bytes, never acknowledged: "
                "a crash or a full disk); cutting it away",
                store.journal_location,
                len(journal) - whole,
            )
            store.cut_journal(whole)
        ledger = cls._load(store, snapshot, lines)
        if ledger.meta.get("owner") != dict(owner):
            raise LedgerError(
                f"The batch ledger {store.location} belongs to another task instance "
                f"({ledger.meta.get('owner')}); not touching it"
            )
        if items is not None:
            ledger.check_items(items)
        return ledger

    @classmethod
    def _load(cls, store: LedgerStore, snapshot: str | None, lines: list[bytes]) -> Ledger:
        where = store.location
        try:
            data = json.loads(snapshot) if snapshot is not None else None
        except ValueError:
            raise LedgerError(f"The batch ledger {where} is damaged (its snapshot is not JSON)") from None
        if (
            not isinstance(data, dict)
            or data.get("format") != FORMAT
            or data.get("version") not in READABLE_VERSIONS
        ):
            raise LedgerError(f"{where} is not a version-{VERSION} Doitong batch ledger")
        try:
            meta = checked_meta(typed(data.get("meta"), dict, "meta"))
            seq = count(data.get("seq", 0), "seq")
            entries = typed(data.get("items"), list, "items")
            records = [ItemRecord.from_dict(typed(item, dict, "item")) for item in entries]
            if data["version"] == 1:  # a record for every item, in order
                if [record.index for record in records] != list(range(len(records))):
                    raise ValueError("items out of order")
                ledger = cls(store, meta=meta, records=records, seq=seq)
            else:  # the keys, and the records of items no longer pristine, in order
                keys = ItemKeys.read(data.get("keys"))
                indices = [record.index for record in records]
                if indices != sorted(set(indices)) or (indices and indices[-1] >= len(keys)):
                    raise ValueError("items out of order")
                if any(record.key != keys[record.index] for record in records):
                    raise ValueError("an item's key differs from the keys")
                ledger = cls(store, meta=meta, records=records, seq=seq, keys=keys)
        except (ValueError, TypeError) as exc:
            raise _tampered(where, f"its snapshot: {exc}") from None
        ledger._snapshot_bytes = len(snapshot or "")
        ledger._replay(lines)
        return ledger

    def _replay(self, lines: list[bytes]) -> None:
        total = len(self._keys)
        for position, line in enumerate(lines, start=1):
            try:
                event = json.loads(line)
                if not isinstance(event, dict):
                    raise ValueError("not a record")
                seq = count(event.get("q", 0), "q")
                self._journal_bytes += len(line) + 1
                if seq <= self._seq:
                    continue
                if "meta" in event:
                    self.meta.update(checked_meta(typed(event["meta"], dict, "meta")))
                elif "i" in event:
                    index = count(event["i"], "i")
                    if index >= total:
                        raise ValueError(f"item {index + 1} of {total}")
                    self._apply(index, _fields(typed(event.get("set") or {}, dict, "set")))
                self._seq = seq
            except (ValueError, TypeError) as exc:
                raise _tampered(
                    getattr(self.store, "journal_location", self.store.location), f"line {position}: {exc}"
                ) from None

    def check_items(self, items: Sequence[BatchItem]) -> None:
        """:raises LedgerError: if the ledger was written for other items."""
        where = self.store.location
        if len(self._keys) != len(items):
            raise LedgerError(
                f"The batch ledger {where} was written for {len(self._keys)} items, this try has "
                f"{len(items)}: a retry must see the same prompts. Delete the ledger to start over"
            )
        packed = self._keys.packed
        if packed is not None and isinstance(items, ItemList) and packed == items.packed_keys():
            return  # the same keys, compared without building an item
        for index, item in enumerate(items):
            if self._keys[index] != item.fingerprint:
                raise LedgerError(
                    f"The batch ledger {where} was written for other prompts (item {item.index + 1}, "
                    f"{item.source}, differs): a retry must see the same prompts. Delete the ledger to start over"
                )

    # --- reading --------------------------------------------------------------------------
    @property
    def is_new(self) -> bool:
        """Whether this ledger was started in memory, none having been found in its store."""
        return not self._persisted

    @property
    def records(self) -> Sequence[ItemRecord]:
        """Every item's record, by index (a pending item's is built when asked for)."""
        return RecordView(self)

    def _record(self, index: int) -> ItemRecord:
        record = self._records.get(index)
        if record is None:
            if not 0 <= index < len(self._keys):
                raise IndexError("item index out of range")
            record = self._records[index] = ItemRecord(index=index, key=self._keys[index])
        return record

    def in_state(self, *states: ItemState) -> list[int]:
        """The indices of items in any of ``states``, in order."""
        if ItemState.PENDING not in states:
            found: set[int] = set()
            for state in states:
                found |= self._by_state[state]
            return sorted(found)
        others = [self._by_state[state] for state in ItemState if state not in states]
        excluded = set().union(*others)
        if not excluded:
            return list(range(len(self._keys)))
        return [index for index in range(len(self._keys)) if index not in excluded]

    def count(self, *states: ItemState) -> int:
        """:param states: the states counted."""
        found = sum(len(self._by_state[state]) for state in states if state is not ItemState.PENDING)
        if ItemState.PENDING in states:
            found += len(self._keys) - sum(len(indices) for indices in self._by_state.values())
        return found

    @property
    def total(self) -> int:
        """How many items the batch has."""
        return len(self._keys)

    def __iter__(self) -> Iterator[ItemRecord]:
        """Every item's record, in order; a pending item's built for the moment (not kept)."""
        records, keys = self._records, self._keys
        for index in range(len(keys)):
            record = records.get(index)
            yield record if record is not None else ItemRecord(index=index, key=keys[index])

    # --- changing -------------------------------------------------------------------------
    def _apply(self, index: int, changes: Mapping[str, Any]) -> None:
        record = self._record(index)
        old = record.state
        for key, value in changes.items():
            if key == "state":
                value = ItemState(value)
            setattr(record, key, value)
        if record.state is not old:
            self._by_state[old].discard(index)
            if record.state is not ItemState.PENDING:
                self._by_state[record.state].add(index)

    def update(self, index: int, **changes: Any) -> ItemRecord:
        """Change an item's record in memory and queue the change for :meth:`flush`.

        :param changes: fields of :class:`ItemRecord` (``state`` as an :class:`ItemState`).
        """
        self._apply(index, changes)
        plain = {k: (v.value if isinstance(v, ItemState) else v) for k, v in changes.items()}
        self._seq += 1
        self._buffer.append({"q": self._seq, "i": index, "set": plain})
        return self._records[index]

    def set_meta(self, **values: Any) -> None:
        """Change the ledger's metadata (learned durations, the last try...), queued for :meth:`flush`.

        :param values: JSON values.
        """
        self.meta.update(values)
        self._seq += 1
        self._buffer.append({"q": self._seq, "meta": values})

    def flush(self) -> None:
        """Make every queued change durable, in one write; fold the journal in when it has grown."""
        if not self._buffer:
            return
        if not self._persisted:
            self._buffer.clear()
            self._write_snapshot()
            return
        text = "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in self._buffer)
        self.store.append_journal(text, seq=self._buffer[0]["q"])
        self._buffer.clear()
        self._journal_bytes += len(text)
        if (
            self._journal_bytes > max(COMPACT_MIN_BYTES, self._snapshot_bytes)
            or self.store.journal_objects > MAX_JOURNAL_OBJECTS
        ):
            self._write_snapshot()

    def _write_snapshot(self) -> None:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "seq": self._seq,
            "meta": self.meta,
            "keys": self._keys.to_json(),
            "items": [record.to_dict() for _, record in sorted(self._records.items()) if not record.pristine],
        }
        text = json.dumps(doc, separators=(",", ":"))
        self.store.write_snapshot(text)
        self.store.reset_journal()
        self._snapshot_bytes = len(text)
        self._journal_bytes = 0
        self._persisted = True

    def close(self) -> None:
        """Release the store; changes not flushed are dropped (a refused batch writes nothing)."""
        self.store.close()


def _keys_of(items: Sequence[BatchItem]) -> ItemKeys:
    if isinstance(items, ItemList):
        return ItemKeys(packed=items.packed_keys())
    return ItemKeys.of(item.fingerprint for item in items)


def summary_counts(records: Iterable[ItemRecord]) -> dict[str, int]:
    """How many items are in each state (every state listed)."""
    if isinstance(records, Ledger):
        return {state.value: records.count(state) for state in ItemState}
    counts = {state.value: 0 for state in ItemState}
    for record in records:
        counts[record.state.value] += 1
    return counts


def _fields(changes: Mapping[str, Any]) -> dict[str, Any]:
    return checked_fields(changes, state=ItemState)


def _tampered(where: str, detail: str) -> LedgerError:
    return LedgerError(
        f"The batch ledger {where} is damaged or was changed by hand ({detail}); this try submitted "
        "nothing. Restore the ledger from a copy, or delete its folder to start the batch over (items "
        "already paid for would be paid again)"
    )
