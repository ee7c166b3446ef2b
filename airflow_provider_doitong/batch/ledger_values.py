"""Reading a batch ledger back: its journal's whole records, and every value checked.

A ledger under a shared ``output_path`` is untrusted: anything read back is checked before it is
used (files are plain names inside the folder, states are known, job ids are printable text,
counts are non-negative integers), so a tampered ledger is one clear error, never a raw
``KeyError`` or ``TypeError``, and never a path outside the folder counted as stored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any


def journal_lines(journal: bytes) -> tuple[list[bytes], int]:
    """The journal's records, and how many of its bytes hold them.

    A last record without its newline, or one that is not JSON (a write cut short, padded with
    zeros by the file system), was never acknowledged and is left out.
    """
    end = journal.rfind(b"\n") + 1
    lines = journal[:end].split(b"\n")[:-1]
    if lines:
        try:
            json.loads(lines[-1])
        except ValueError:
            end -= len(lines.pop()) + 1
    return lines, end


def typed(value: Any, kind: type, what: str) -> Any:
    """``value`` if it is a ``kind``, else ``TypeError`` naming ``what``."""
    if not isinstance(value, kind):
        raise TypeError(f"{what} is a {type(value).__name__}, not a {kind.__name__}")
    return value


def count(value: Any, what: str) -> int:
    """``value`` if it is a non-negative integer (not a bool), else ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what}={value!r} is not a count")
    return value


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what}={value!r} is not a number")
    return float(value)


def _text(value: Any, what: str) -> str:
    return str(typed(value, str, what))


def _job_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256 or not value.isprintable():
        raise ValueError(f"{what}={value!r} is not a job id")
    return value


def _file_name(value: Any, what: str) -> str:
    """A plain file name in the output folder: no folder, no link out of it, no hidden file."""
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= 255
        or any(char in value for char in "/\\\0")
        or value.startswith(".")
        or not value.isprintable()
    ):
        raise ValueError(f"{what}={value!r} is not a file name in the output folder")
    return value


_HEX = re.compile(r"[0-9a-f]{1,128}")


def _digest(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise ValueError(f"{what}={value!r} is not a hex digest")
    return value


def _flag(value: Any, what: str) -> bool:
    return bool(typed(value, bool, what))


def _optional(check: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    return lambda value, what: None if value is None else check(value, what)


def _job_ids(value: Any, what: str) -> list[str]:
    return [_job_id(job_id, what) for job_id in typed(value, list, what)]


_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "index": count,
    "key": _text,
    "attempts": count,
    "failures": count,
    "job_id": _optional(_job_id),
    "job_ids": _job_ids,
    "submitted_at": _optional(_number),
    "credits": _optional(count),
    "duration": _optional(_number),
    "completed_at": _optional(_text),
    "file": _optional(_file_name),
    "sha256": _optional(_digest),
    "bytes": _optional(count),
    "error": _optional(_text),
    "ambiguous": count,
    "cached": _flag,
}
#: Fields ledgers written by earlier versions name otherwise: read under their current name.
EARLIER_NAMES = {"unconfirmed": "ambiguous"}


def checked_fields(changes: Mapping[str, Any], *, state: Callable[[str], Any]) -> dict[str, Any]:
    """Record fields read back from a ledger, each checked and typed.

    :param state: makes an item state of its name (raising ``ValueError`` for an unknown one).
    :raises ValueError: (or ``TypeError``) for an unknown field or a value no ledger holds.
    """
    checked = {}
    for key, value in changes.items():
        key = EARLIER_NAMES.get(key, key)
        check = (lambda v, w: state(_text(v, w))) if key == "state" else _FIELDS.get(key)
        if check is None:
            raise ValueError(f"unknown field {key!r}")
        checked[key] = check(value, key)
    return checked


def _owner(value: Any, what: str) -> dict[str, Any]:
    owner = dict(typed(value, dict, what))
    if set(owner) != {"dag_id", "run_id", "task_id", "map_index"}:
        raise ValueError(f"{what} is not a task instance")
    for key in ("dag_id", "run_id", "task_id"):
        _text(owner[key], f"{what}.{key}")
    if isinstance(owner["map_index"], bool) or not isinstance(owner["map_index"], int):
        raise ValueError(f"{what}.map_index is not an integer")
    return owner


def _counts(value: Any, what: str) -> list[int]:
    return [count(item, what) for item in typed(value, list, what)]


def _numbers(value: Any, what: str) -> list[float]:
    return [_number(item, what) for item in typed(value, list, what)]


_META: dict[str, Callable[[Any, str], Any]] = {
    "owner": _owner,
    "items": count,
    "try": count,
    "deadline": _optional(_number),
    "durations": _numbers,
    "resume_lead_s": _number,
    "resumes": count,
    "credits_estimated": _optional(count),
    "items_sha256": _digest,
    "items_bytes": count,
    "cache_to_fill": _counts,
    "seeded": _optional(_counts),
}


def checked_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ledger's metadata read back: the values the provider reads are checked and typed."""
    return {key: _META[key](value, key) if key in _META else value for key, value in meta.items()}


#: The bytes of a key of the compact form (``short_fingerprint``: 12 lower-case hex digits).
KEY_BYTES = 6


class ItemKeys:
    """Every item's key, by index: six bytes each when all are of the fingerprint's form (a million
    items: 6 MB), else a list of strings (keys of another form, e.g. written by hand in a test).

    :param packed: the keys' bytes, :data:`KEY_BYTES` each, one after the other.
    :param texts: the keys as strings, when they are not all of the compact form.
    """

    __slots__ = ("_packed", "_texts")

    def __init__(self, *, packed: bytes = b"", texts: list[str] | None = None) -> None:
        if len(packed) % KEY_BYTES:
            raise ValueError("keys of an unknown form")
        self._packed = packed
        self._texts = texts

    @classmethod
    def of(cls, keys: Any) -> ItemKeys:
        """The keys of an iterable of strings, packed when they all are of the compact form."""
        texts = list(keys)
        try:
            packed = bytes.fromhex("".join(texts))
        except ValueError:
            return cls(texts=texts)
        if packed.hex() == "".join(texts) and all(len(key) == 2 * KEY_BYTES for key in texts):
            return cls(packed=packed)
        return cls(texts=texts)

    @classmethod
    def read(cls, value: Any) -> ItemKeys:
        """Keys read back from a snapshot (:meth:`to_json`), checked.

        :raises ValueError: (or ``TypeError``) for keys no ledger holds.
        """
        if isinstance(value, str):
            packed = bytes.fromhex(value)
            if packed.hex() != value:
                raise ValueError("keys of an unknown form")
            return cls(packed=packed)
        return cls(texts=[_text(key, "key") for key in typed(value, list, "keys")])

    def __len__(self) -> int:
        return len(self._texts) if self._texts is not None else len(self._packed) // KEY_BYTES

    def __getitem__(self, index: int) -> str:
        if self._texts is not None:
            return self._texts[index]
        return self._packed[index * KEY_BYTES : (index + 1) * KEY_BYTES].hex()

    @property
    def packed(self) -> bytes | None:
        """The keys' bytes, if of the compact form."""
        return None if self._texts is not None else self._packed

    def to_json(self) -> str | list[str]:
        """The keys as a snapshot holds them: one hex string, or a list of strings."""
        return self._texts if self._texts is not None else self._packed.hex()
