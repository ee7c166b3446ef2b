"""A batch's checked items, saved once beside its ledger so that a resume never reads the prompts again.

The first try reads and checks ``prompts`` or ``prompts_file`` (see :mod:`.items`), then writes the
items it will generate to ``items.jsonl`` in the ledger's folder, through the storage layer (a
temporary file, fsync, rename; one whole object on object storage); the ledger's metadata records
the file's SHA-256 and size. A resume after a deferral reads that file, streamed, instead of the
user's: it checks the digest and parses each line into an :class:`~.item_list.ItemList`, and does
not check every prompt again. The
file is the batch's own: a prompts file changed or deleted after the first try does not change
the batch it started.

The file: a header line ``{"format": "doitong-batch-items", "version": 1, "items": N}``, then lines
of up to :data:`CHUNK_ITEMS` items, each line a JSON array of
``[key, source, prompt, provider, width, height, quality, version]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from airflow_provider_doitong.batch.item_list import BatchItem, ItemList
from airflow_provider_doitong.client.fingerprint import SHORT_CHARS
from airflow_provider_doitong.storage import Place, UnsafeOutputPath

ITEMS_NAME = "items.jsonl"
FORMAT = "doitong-batch-items"
VERSION = 1
#: The bytes of an item's key.
KEY_BYTES = SHORT_CHARS // 2
_VERSION_TYPES = {str, type(None)}
#: Items in one line of the file: parsed in one ``json.loads`` (a call per item would cost seconds).
CHUNK_ITEMS = 4096


class SavedItemsError(RuntimeError):
    """The saved items cannot be used (changed by hand or damaged); the message names the file."""


def _lines(items: Sequence[BatchItem]) -> Iterator[bytes]:
    yield json.dumps({"format": FORMAT, "version": VERSION, "items": len(items)}).encode() + b"\n"
    if isinstance(items, ItemList):  # one chunk at a time, without a list per row nor an item
        for start in range(0, len(items), CHUNK_ITEMS):
            yield items.rows_json(start, min(start + CHUNK_ITEMS, len(items))).encode("ascii") + b"\n"
        return
    rows: list[list[Any]] = []
    for row in map(_row, items):
        rows.append(row)
        if len(rows) == CHUNK_ITEMS:
            yield _chunk(rows)
            rows = []
    if rows:
        yield _chunk(rows)


def _chunk(rows: list[list[Any]]) -> bytes:
    # ASCII (a lone surrogate never gets this far: the items were checked)
    return json.dumps(rows, separators=(",", ":")).encode("ascii") + b"\n"


def _row(item: BatchItem) -> list[Any]:
    request = item.request
    return [
        item.fingerprint,
        item.source,
        request.prompt,
        request.provider,
        request.width,
        request.height,
        request.quality,
        request.version,
    ]


def save_items(place: Place, items: Sequence[BatchItem]) -> tuple[str, int]:
    """Write ``items`` to :data:`ITEMS_NAME` in ``place``, replacing any file there, all or nothing.

    :return: the file's SHA-256 (hex) and size in bytes, for the ledger's metadata.
    """
    digest = hashlib.sha256()
    size = 0

    def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
        nonlocal size
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            yield chunk

    place.write(ITEMS_NAME, counted(_lines(items)))
    return digest.hexdigest(), size


def saved_digest(place: Place) -> str | None:
    """The SHA-256 of the saved items file as it is now (read streamed), or ``None`` if there is none."""
    with place.open_read(ITEMS_NAME) as stream:
        if stream is None:
            return None
        digest = hashlib.sha256()
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def load_items(place: Place, *, sha256: str) -> ItemList | None:
    """The items saved in ``place``, read streamed (``None`` if there are none); their digest must
    be ``sha256``.

    :raises SavedItemsError: if the file cannot be read, or is not the file that was
        saved (its digest differs, or a line is not what :func:`save_items` writes); the message
        names the file.
    """
    where = place.shown(ITEMS_NAME)
    digest = hashlib.sha256()
    try:
        with place.open_read(ITEMS_NAME) as stream:
            if stream is None:
                return None
            found = _parse(_hashed(stream, digest))
    except (OSError, UnsafeOutputPath) as exc:
        raise SavedItemsError(f"The batch's saved items {where} cannot be read: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise _damaged(where, str(exc)) from None
    if digest.hexdigest() != sha256:
        raise _damaged(where, f"SHA-256 {digest.hexdigest()[:16]}, its ledger recorded {sha256[:16]}")
    return found


def _damaged(where: str, detail: str) -> SavedItemsError:
    return SavedItemsError(
        f"The batch's saved items {where} are not the file its first try wrote ({detail}): damaged or "
        "changed by hand"
    )


def _hashed(stream: Any, digest: Any) -> Iterator[bytes]:
    for line in stream:
        digest.update(line)
        yield line


def _parse(lines: Iterator[bytes]) -> ItemList:
    """Items from the file's lines; a line that is not what :func:`save_items` writes raises
    ``ValueError`` (or ``TypeError``)."""
    header = json.loads(next(lines, b""))
    if not isinstance(header, dict) or header.get("format") != FORMAT or header.get("version") != VERSION:
        raise ValueError("not a saved items file")
    found = ItemList()
    for line in lines:
        rows = json.loads(line)
        if not _extend(found, rows):  # a row of another form: each checked on its own
            for row in rows:
                found.append_saved(*row)
    if len(found) != header.get("items"):
        raise ValueError(f"{len(found)} items, the header says {header.get('items')}")
    return found


def _extend(found: ItemList, rows: Any) -> bool:
    """Add a line's rows at once where each is of the common form (every value of the type
    :meth:`ItemList.append_saved` checks, a key of :data:`KEY_BYTES` bytes in lower-case hex, a
    source ``line N``), as that method would one by one; ``False``, nothing added, otherwise."""
    if type(rows) is not list or not rows or set(map(type, rows)) != {list} or set(map(len, rows)) != {8}:
        return False
    keys, sources, prompts, providers, widths, heights, qualities, versions = zip(*rows, strict=True)
    strings = (keys, sources, prompts, providers, qualities)
    if any(set(map(type, values)) != {str} for values in strings) or set(map(len, keys)) != {2 * KEY_BYTES}:
        return False
    if (
        set(map(type, widths)) | set(map(type, heights)) != {int}
        or not set(map(type, versions)) <= _VERSION_TYPES
    ):
        return False
    text = "".join(keys)
    try:
        packed = bytes.fromhex(text)
        numbers = [int(source[5:]) for source in sources]
    except ValueError:
        return False
    if packed.hex() != text or min(numbers) < 0 or [f"line {number}" for number in numbers] != list(sources):
        return False
    shapes = found.shapes(zip(providers, widths, heights, qualities, versions, strict=True), "line")
    raw_keys = [packed[at : at + KEY_BYTES] for at in range(0, len(packed), KEY_BYTES)]
    found.extend_lines(list(prompts), raw_keys, numbers, shapes)
    return True
