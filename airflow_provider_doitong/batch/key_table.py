"""The set of a batch's item keys seen so far, compactly: what tells a repeated item."""

from __future__ import annotations

from array import array
from collections.abc import Iterable

from airflow_provider_doitong.client.fingerprint import SHORT_CHARS

#: The bytes of an item's key.
KEY_BYTES = SHORT_CHARS // 2
#: The largest table :meth:`KeyTable.for_keys` makes at first: 16 MB, a million keys.
MAX_FIRST_BITS = 21


class KeyTable:
    """Items' keys (:data:`KEY_BYTES` bytes each) seen, held in one array (open addressing, a key's
    slot its own low bits: keys are digests): 16 MB for a million keys, where a ``set`` of them
    takes 62 MB.

    :param bits: the table's first size, ``2 ** bits`` slots (it doubles when half full).
    """

    def __init__(self, bits: int = 12) -> None:
        self._table = array("Q", bytes(8 << bits))  # each key as a number, plus one; 0 a free slot
        self._mask = (1 << bits) - 1
        self._free = self._mask // 2  # keys still to add before the table doubles

    @classmethod
    def for_keys(cls, expected: int) -> KeyTable:
        """A table sized for ``expected`` keys, up to a million (16 MB), without doubling."""
        return cls(bits=min(MAX_FIRST_BITS, max(12, (2 * expected).bit_length())))

    def add(self, raw_key: bytes) -> bool:
        """Add a key; ``False`` if it was already there."""
        return self.fresh([raw_key])[0]

    def fresh(self, keys: Iterable[bytes]) -> list[bool]:
        """Add keys in order; for each, whether it was not there yet (a key twice in ``keys``: the
        second is not fresh)."""
        out = []
        table, mask, free = self._table, self._mask, self._free
        for key in keys:
            number = int.from_bytes(key, "big") + 1
            slot = number & mask
            held = table[slot]
            while held and held != number:
                slot = (slot + 1) & mask
                held = table[slot]
            if held:
                out.append(False)
                continue
            table[slot] = number
            out.append(True)
            free -= 1
            if not free:
                self._free = free
                self._grow()
                table, mask, free = self._table, self._mask, self._free
        self._free = free
        return out

    def _grow(self) -> None:
        old, held = self._table, self._mask // 2  # a full table holds half as many keys as slots
        self._mask = mask = 2 * self._mask + 1
        self._table = table = array("Q", bytes(8 * (mask + 1)))
        self._free = mask // 2 - held
        for number in old:
            if number:
                slot = number & mask
                while table[slot]:
                    slot = (slot + 1) & mask
                table[slot] = number
