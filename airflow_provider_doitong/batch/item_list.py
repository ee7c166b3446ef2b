"""A batch's items (:mod:`.batch_item`), and the compact list that holds a million of them.

:class:`ItemList` keeps each item's prompt as UTF-8 bytes in one buffer, its key as six bytes, its
source as a number and its options (model, size, quality, version) as the index of one of the few
sets of options the batch uses; a :class:`BatchItem` is built only when one is asked for. A million
prompts of 70 characters take about 90 MB there, against about 450 MB as a million objects.
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate
from json.encoder import encode_basestring_ascii
from typing import Any, overload

from airflow_provider_doitong.batch.batch_item import SLUG_MAX_CHARS as SLUG_MAX_CHARS
from airflow_provider_doitong.batch.batch_item import BatchItem as BatchItem
from airflow_provider_doitong.batch.batch_item import (
    _check_types,
    _new,
    _set_height,
    _set_index,
    _set_key,
    _set_prompt,
    _set_provider,
    _set_quality,
    _set_request,
    _set_source,
    _set_version,
    _set_webhook_url,
    _set_width,
)
from airflow_provider_doitong.batch.batch_item import slugify as slugify
from airflow_provider_doitong.batch.batch_item import trusted_request as trusted_request
from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.client.fingerprint import SHORT_CHARS

#: A string as ASCII JSON (the encoder's own function, as ``json.dumps`` calls it), and any value.
_json_text: Any = encode_basestring_ascii
_json = json.dumps
#: The bytes of an item's key.
_KEY_BYTES = SHORT_CHARS // 2

#: An item's options and the word of its source: ``(provider, width, height, quality, version, "line")``.
Shape = tuple[str, int, int, str, str | None, str]


class ItemList(Sequence[BatchItem]):
    """A batch's checked items, held compactly (see the module); ``items[i]`` builds item ``i``.

    Only :meth:`append` adds to it, with values already checked (:func:`~.items.build_items`) or
    read from the batch's own saved items (:mod:`.saved_items`).
    """

    def __init__(self) -> None:
        # the arrays' items as narrow as the values so far allow, widened when one does not fit
        self._text = bytearray()  # every prompt, UTF-8, one after the other
        self._ends = array("I")  # where each prompt ends in _text
        self._keys = bytearray()  # each key's SHORT_CHARS hex digits as bytes
        self._numbers = array("I")  # each source's number (``line 12``: 12)
        self._shape_of = array("H")  # each item's index in _shapes
        self._shapes: list[Shape] = []
        self._shape_index: dict[Shape, int] = {}
        self._other_sources: dict[int, str] = {}  # a source of another form than ``line 12``

    def append(self, request: ImageRequest, *, source: str, key: str) -> None:
        """Add an item (it gets the next index).

        :param request: its checked request.
        :param source: where it came from (``line 12``, ``item 3``: a word and a number, kept as such).
        :param key: its :func:`~airflow_provider_doitong.client.fingerprint.short_fingerprint`.
        :raises ValueError: for a key of another form.
        """
        raw_key = bytes.fromhex(key)
        if len(raw_key) != _KEY_BYTES:
            raise ValueError(f"a key of an unknown form: {key!r}")
        shape = (request.provider, request.width, request.height, request.quality, request.version)
        self._add(raw_key, source, request.prompt, shape)

    def append_keyed(self, options: ImageRequest, prompt: str, *, source: str, raw_key: bytes) -> None:
        """Add an item of checked ``options`` (its own prompt unused) and a checked ``prompt``, whose
        key :func:`~airflow_provider_doitong.client.fingerprint.short_keyer` made, as bytes."""
        shape = (options.provider, options.width, options.height, options.quality, options.version)
        self._add(raw_key, source, prompt, shape)

    def shape(self, options: ImageRequest, word: str) -> int:
        """The number :meth:`append_line` takes for items of checked ``options`` (their own prompt
        unused) whose sources are ``word`` and a number (``line 12``)."""
        if not word or word != word.strip() or " " in word:
            raise ValueError(f"a source word of another form: {word!r}")
        return self._shape(
            (options.provider, options.width, options.height, options.quality, options.version, word)
        )

    def shapes(self, options: Iterable[tuple[Any, ...]], word: str) -> list[int]:
        """:meth:`shape` for many items, each of its checked ``(provider, width, height, quality,
        version)``, their sources all ``word`` and a number."""
        known, out = self._shape_index, []
        for values in options:
            shape: Shape = (*values, word)
            found = known.get(shape)
            out.append(self._shape(shape) if found is None else found)
        return out

    def append_line(self, prompt: str, raw_key: bytes, number: int, shape: int) -> None:
        """Add an item of a checked ``prompt`` and key (as for :meth:`append_keyed`), its source
        :meth:`shape`'s word and ``number`` (not negative), its options those of ``shape``."""
        self._text += prompt.encode("utf-8")
        try:
            self._ends.append(len(self._text))
            self._numbers.append(number)
            self._shape_of.append(shape)
        except OverflowError:
            self._append_wide(len(self._text), number, shape)
        self._keys += raw_key

    def extend_lines(
        self, prompts: list[str], keys: list[bytes], numbers: list[int], shape: int | list[int]
    ) -> None:
        """:meth:`append_line` for many items at once (``shape`` one for all, or one each)."""
        if len(keys) != len(prompts) or len(numbers) != len(prompts) or not prompts:
            if prompts or keys or numbers:
                raise ValueError("as many prompts, keys and numbers are needed")
            return
        shapes = [shape] * len(prompts) if isinstance(shape, int) else shape
        joined = b"".join(keys)
        if len(joined) != _KEY_BYTES * len(prompts) or len(shapes) != len(prompts):
            raise ValueError("a key of an unknown form, or not one shape an item")
        encoded = list(map(str.encode, prompts))
        start = len(self._text)
        ends = list(accumulate(map(len, encoded), initial=start))[1:]
        for name, values in (("_ends", ends), ("_numbers", numbers), ("_shape_of", shapes)):
            self._fit(name, min(values), max(values))
        self._text += b"".join(encoded)
        self._ends.extend(ends)
        self._numbers.extend(numbers)
        self._shape_of.extend(shapes)
        self._keys += joined

    def _fit(self, name: str, least: int, most: int) -> None:
        """Widen the array ``name`` to 8-byte items if ``most`` does not fit its own."""
        values: array[int] = getattr(self, name)
        if least < 0:
            raise ValueError(f"a negative value for {name}: {least}")
        if most >> (8 * values.itemsize) and values.typecode != "Q":
            setattr(self, name, array("Q", values))

    def _append_wide(self, end: int, number: int, shape: int) -> None:
        """Append what :meth:`append_line` could not, each array widened to 8-byte items where its
        value does not fit."""
        count = len(self._keys) // _KEY_BYTES
        for name, value in (("_ends", end), ("_numbers", number), ("_shape_of", shape)):
            values: array[int] = getattr(self, name)
            if len(values) > count:  # appended before the one that did not fit
                continue
            self._fit(name, value, value)
            getattr(self, name).append(value)

    def append_saved(
        self,
        key: str,
        source: str,
        prompt: str,
        provider: str,
        width: int,
        height: int,
        quality: str,
        version: str | None,
    ) -> None:
        """Add an item from a row of the batch's saved items (:mod:`.saved_items`), whose values were
        checked when the batch first read them: each is checked again for its type and form only.

        :raises ValueError: (or ``TypeError``) for a value of another type or form (a saved items
            file changed by hand).
        """
        _check_types(prompt, provider, width, height, quality, version)
        if type(source) is not str:
            raise TypeError("a saved item holds a value of the wrong type")
        raw_key = bytes.fromhex(key)
        if len(raw_key) != _KEY_BYTES or raw_key.hex() != key:
            raise ValueError(f"a key of an unknown form: {key!r}")
        self._add(raw_key, source, prompt, (provider, width, height, quality, version))

    def _add(self, raw_key: bytes, source: str, prompt: str, options: tuple[Any, ...]) -> None:
        """Add an item whose values are checked (``options``: provider, width, height, quality, version)."""
        word, _, digits = source.rpartition(" ")
        number = int(digits) if digits.isdigit() and digits.isascii() else -1
        if not word or number < 0 or f"{word} {number}" != source:  # not ``line 12``: kept as it is
            self._other_sources[len(self)] = source
            word, number = "", 0
        if len(raw_key) != _KEY_BYTES:
            raise ValueError(f"a key of an unknown form: {raw_key.hex()!r}")
        self.append_line(prompt, raw_key, number, self._shape((*options, word)))

    def _shape(self, shape: Shape) -> int:
        found = self._shape_index.get(shape)
        if found is None:
            found = self._shape_index[shape] = len(self._shapes)
            self._shapes.append(shape)
        return found

    def __len__(self) -> int:
        return len(self._ends)

    def kinds(self) -> set[tuple[str, int, int, str]]:
        """The distinct ``(provider, width, height, quality)`` of its items, without building them."""
        return {(str(s[0]), int(s[1]), int(s[2]), str(s[3])) for s in self._shapes}

    @overload
    def __getitem__(self, index: int) -> BatchItem: ...

    @overload
    def __getitem__(self, index: slice) -> list[BatchItem]: ...

    def __getitem__(self, index: int | slice) -> BatchItem | list[BatchItem]:
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("item index out of range")
        return self._item(index)

    def __iter__(self) -> Iterator[BatchItem]:
        start = 0
        for index, end in enumerate(self._ends):
            yield self._build(index, start, end)
            start = end

    def _item(self, index: int) -> BatchItem:
        return self._build(index, self._ends[index - 1] if index else 0, self._ends[index])

    def _build(self, index: int, start: int, end: int) -> BatchItem:
        """Item ``index``, its prompt at ``_text[start:end]``: its values were checked when appended."""
        provider, width, height, quality, version, word = self._shapes[self._shape_of[index]]
        request = _new(ImageRequest)
        _set_prompt(request, self._text[start:end].decode("utf-8"))
        _set_provider(request, provider)
        _set_width(request, width)
        _set_height(request, height)
        _set_quality(request, quality)
        _set_version(request, version)
        _set_webhook_url(request, None)
        item = _new(BatchItem)
        _set_index(item, index)
        _set_request(item, request)
        _set_source(item, self._source(index, word))
        _set_key(item, self._keys[index * _KEY_BYTES : (index + 1) * _KEY_BYTES].hex())
        return item

    def _source(self, index: int, word: str) -> str:
        return f"{word} {self._numbers[index]}" if word else self._other_sources[index]

    def prompts(self) -> Iterator[tuple[int, str]]:
        """``(index, prompt)`` of every item, without building the items."""
        text, start = self._text, 0
        for index, end in enumerate(self._ends):
            yield index, text[start:end].decode("utf-8")
            start = end

    def holding(self, texts: Iterable[str]) -> list[int]:
        """The indices, in order, of the items whose prompt holds any of ``texts`` (as ``text in
        prompt`` says): each looked for in the prompts' UTF-8 buffer at once, a match counted where
        it lies within one prompt (UTF-8 matches a whole text only at a character's start)."""
        text, ends, found = self._text, self._ends, set()
        for wanted in texts:
            try:
                needle = wanted.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: in no checked prompt
                continue
            if not needle:
                return list(range(len(self)))
            position = text.find(needle)
            while position != -1:
                index = bisect_right(ends, position)  # the prompt this match starts in
                if position + len(needle) <= ends[index]:
                    found.add(index)
                # a later match in this prompt adds nothing, and one crossing its end is no match
                position = text.find(needle, ends[index])
        return sorted(found)

    def rows(self) -> Iterator[list[Any]]:
        """``[key, source, prompt, provider, width, height, quality, version]`` of every item, in
        order, without building the items (the saved items' rows: :mod:`.saved_items`)."""
        text, keys, shape_of, shapes, start = self._text, self._keys, self._shape_of, self._shapes, 0
        for index, end in enumerate(self._ends):
            provider, width, height, quality, version, word = shapes[shape_of[index]]
            yield [
                keys[index * _KEY_BYTES : (index + 1) * _KEY_BYTES].hex(),
                self._source(index, word),
                text[start:end].decode("utf-8"),
                provider,
                width,
                height,
                quality,
                version,
            ]
            start = end

    def packed_keys(self) -> bytes:
        """Every item's key as bytes (six each, in order): compared whole, without building an item."""
        return bytes(self._keys)

    def estimates(self) -> array[int]:
        """Every item's estimated credits, by index, from its options alone (no item built)."""
        costs = [self._request_of(shape).estimated_credits for shape in self._shapes]
        return array("Q", map(costs.__getitem__, self._shape_of))

    def rows_json(self, start: int, stop: int) -> str:
        """The JSON array (compact, ASCII) of :meth:`rows` ``start`` to ``stop``: the text
        ``json.dumps(rows, separators=(",", ":"))`` gives, made without a list per row (the prompts
        escaped at once where none needs it, as ASCII prompts without ``"`` or ``\\`` do)."""
        if start >= stop:
            return "[]"
        text, ends, other = self._text, self._ends, self._other_sources
        tails = [",".join(map(_json, shape[:5])) for shape in self._shapes]
        words = [_json(shape[5])[:-1] + " " if shape[5] else "" for shape in self._shapes]
        keys = self._keys[start * _KEY_BYTES : stop * _KEY_BYTES].hex()
        width = 2 * _KEY_BYTES
        first = ends[start - 1] if start else 0
        raw = text[first : ends[stop - 1]]
        chunk = raw.decode("utf-8")
        # every prompt its own JSON string between quotes: one byte a character, none escaped
        unescaped = len(chunk) == len(raw) and len(_json_text(chunk)) == len(chunk) + 2
        stops = [end - first for end in ends[start:stop]]
        rows = zip(
            range(0, len(keys), width), [0, *stops[:-1]], stops, self._shape_of[start:stop], strict=True
        )
        numbers = self._numbers[start:stop]
        if unescaped and all(words):  # the common case (every source ``line 12``), in one expression
            out = [
                f'["{keys[at : at + width]}",{words[shape]}{number}","{chunk[begin:end]}",{tails[shape]}]'
                for (at, begin, end, shape), number in zip(rows, numbers, strict=True)
            ]
            return "[" + ",".join(out) + "]"
        out = []
        for (at, begin, end, shape), index, number in zip(rows, range(start, stop), numbers, strict=True):
            word = words[shape]
            source = f'{word}{number}"' if word else _json_text(other[index])
            prompt = f'"{chunk[begin:end]}"' if unescaped else _json_text(raw[begin:end].decode("utf-8"))
            out.append(f'["{keys[at : at + width]}",{source},{prompt},{tails[shape]}]')
        return "[" + ",".join(out) + "]"

    def estimated_credits(self, indices: Iterable[int] | None = None) -> int:
        """What the items (all, or those at ``indices``) should cost, from their options alone."""
        costs = [self._request_of(shape).estimated_credits for shape in self._shapes]
        shapes = self._shape_of if indices is None else map(self._shape_of.__getitem__, indices)
        return sum(map(costs.__getitem__, shapes))

    @staticmethod
    def _request_of(shape: Shape) -> ImageRequest:
        provider, width, height, quality, version, _ = shape
        return trusted_request(
            prompt="", provider=provider, width=width, height=height, quality=quality, version=version
        )
