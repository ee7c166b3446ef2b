"""A ``FluxBatchOperator`` batch's manifest and contact sheet, written from its ledger as they are made.

The document is the one :func:`~.manifest.build_manifest` makes from
:func:`~.manifest.entries_from_ledger` (the same keys, in the same order), but its entries are
made, cleaned and written a chunk at a time: a batch of a million items never holds a million
entries (about a kilobyte each), nor the whole text, at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from airflow_provider_doitong.batch import manifest
from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.ledger import ItemRecord, ItemState
from airflow_provider_doitong.storage import Location, Place, shown

#: Entries encoded into one chunk of the files.
CHUNK_ENTRIES = 1024


def ledger_counts(records: Iterable[ItemRecord]) -> dict[str, int]:
    """``item_count``, ``image_count``, ``failed_count`` and ``credits_spent``, as the manifest has them."""
    items = images = failed = spent = 0
    for record in records:
        items += 1
        if record.state is ItemState.STORED:
            images += 1
            spent += int(record.credits or 0)
        elif record.state is ItemState.FAILED:
            failed += 1
    return {"item_count": items, "image_count": images, "failed_count": failed, "credits_spent": spent}


def ledger_head(
    records: Iterable[ItemRecord],
    *,
    title: str,
    credits_estimated: int | None,
    source: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The top-level keys :func:`~.manifest.build_manifest` gives a batch's manifest, but its ``items``."""
    counts = ledger_counts(records)
    return {
        "format": manifest.FORMAT,
        "version": manifest.VERSION,
        "title": title,
        **dict(extra or {}),
        "source": dict(source),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "item_count": counts["item_count"],
        "image_count": counts["image_count"],
        "failed_count": counts["failed_count"],
        "credits_estimated": credits_estimated,
        "credits_spent": counts["credits_spent"],
    }


def write_ledger_manifest(
    folder: Any,
    items: Sequence[BatchItem],
    records: Sequence[ItemRecord],
    *,
    title: str,
    credits_estimated: int | None,
    source: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    clean: Callable[[Any], Any] = lambda value: value,
) -> dict[str, Any]:
    """Write ``manifest.json`` and ``index.html`` into ``folder`` (each replaced all or nothing, see
    :meth:`~airflow_provider_doitong.storage.Place.write`), an entry at a time.

    :param clean: applied to the top-level keys and to each entry before it is written (the
        connection's secrets replaced, say).
    :return: the paths (``folder``, ``manifest``, ``contact_sheet``) and the counts of
        :func:`ledger_counts`.
    """
    base = Location.of(folder).path
    head = ledger_head(records, title=title, credits_estimated=credits_estimated, source=source, extra=extra)
    counts = {key: head[key] for key in ("item_count", "image_count", "failed_count", "credits_spent")}
    head = clean(head)

    def entries() -> Iterator[Any]:
        return (clean(entry) for entry in manifest.iter_entries_from_ledger(items, records))

    place = Place(base)
    place.write(manifest.MANIFEST_NAME, json_chunks(head, entries()))
    place.write(manifest.CONTACT_SHEET_NAME, _encoded(manifest.contact_sheet_parts(head, entries())))
    return {
        "folder": shown(base),
        "manifest": shown(base / manifest.MANIFEST_NAME),
        "contact_sheet": shown(base / manifest.CONTACT_SHEET_NAME),
        **counts,
    }


def json_chunks(head: Mapping[str, Any], entries: Iterable[Any]) -> Iterator[bytes]:
    """A manifest document's JSON in chunks, for :meth:`~airflow_provider_doitong.storage.Place.write`:
    ``head``'s keys, then ``"items"``, one entry per line."""
    text = json.dumps(head, indent=1, ensure_ascii=False)
    yield (text[: text.rindex("}")].rstrip() + ',\n "items": [').encode("utf-8")
    lines: list[str] = []
    separator = "\n  "
    for entry in entries:
        lines.append(separator + json.dumps(entry, ensure_ascii=False))
        separator = ",\n  "
        if len(lines) == CHUNK_ENTRIES:
            yield "".join(lines).encode("utf-8")
            lines = []
    yield ("".join(lines) + ("\n ]" if separator != "\n  " else "]") + "\n}").encode("utf-8")


def _encoded(parts: Iterable[str]) -> Iterator[bytes]:
    chunk: list[str] = []
    for part in parts:
        chunk.append(part)
        if len(chunk) == CHUNK_ENTRIES:
            yield "".join(chunk).encode("utf-8")
            chunk = []
    yield "".join(chunk).encode("utf-8")
