"""A batch's items: read from a list or a prompts file (:mod:`.entries`), every one checked before
anything is spent.

Sources: a list of prompts (strings), a list of item dicts (``prompt`` plus any of ``provider``,
``width``, ``height``, ``quality``, ``version``), or a prompts file: one prompt per line (blank
lines and ``#`` comments skipped) or, for a ``.jsonl`` file, one JSON item per line. Repeated
items (the same prompt with the same options) are generated once.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import Any

from airflow_provider_doitong.batch.batch_item import SLUG_MAX_CHARS as SLUG_MAX_CHARS
from airflow_provider_doitong.batch.batch_item import BatchItem as BatchItem
from airflow_provider_doitong.batch.batch_item import slugify as slugify
from airflow_provider_doitong.batch.batch_item import trusted_request as trusted_request
from airflow_provider_doitong.batch.budget import budget_problem as budget_problem
from airflow_provider_doitong.batch.entries import MAX_PROBLEMS_SHOWN as MAX_PROBLEMS_SHOWN
from airflow_provider_doitong.batch.entries import BatchInputError as BatchInputError
from airflow_provider_doitong.batch.entries import FileEntries, join_problems, json_entry
from airflow_provider_doitong.batch.entries import NotJson as NotJson
from airflow_provider_doitong.batch.entries import entries_from_list as entries_from_list
from airflow_provider_doitong.batch.entries import entries_from_text as entries_from_text
from airflow_provider_doitong.batch.entries import iter_entries as iter_entries
from airflow_provider_doitong.batch.entries import load_entries as load_entries
from airflow_provider_doitong.batch.entries import parse_jsonl as parse_jsonl
from airflow_provider_doitong.batch.entries import parse_prompt_lines as parse_prompt_lines
from airflow_provider_doitong.batch.item_list import ItemList as ItemList
from airflow_provider_doitong.batch.key_table import KeyTable
from airflow_provider_doitong.client import DoitongValidationError, ImageRequest, contract
from airflow_provider_doitong.client.fingerprint import short_keyer
from airflow_provider_doitong.client.models import checked_prompt
from airflow_provider_doitong.client.redaction import secret_problem

#: The keys an item dict may have.
ITEM_KEYS = frozenset({"prompt", "provider", "width", "height", "quality", "version"})
#: The options an item dict may set, in the order :func:`_checked_options` takes them.
_OPTION_NAMES = ("provider", "width", "height", "quality", "version")
_OPTION_KEYS = frozenset(_OPTION_NAMES)
#: Fewer bytes than a prompts file's line takes, as a rule: the file's size over it, the number of
#: keys the table of keys seen is first sized for (a table that fills doubles, all the same).
BYTES_PER_LINE = 64
#: The most sets of options :func:`build_items` remembers having checked.
MAX_OPTION_SETS = 4096
#: The JSON scanner ``json.loads`` uses, called on a line directly (``json.loads`` checks a str's
#: ends and calls it; a stripped line's ends need no check).
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


@dataclass(frozen=True, kw_only=True)
class ItemDefaults:
    """The options an item does not set itself (the operator's model defaults)."""

    provider: str = "flux-krea"
    width: int | str = contract.DEFAULT_WIDTH
    height: int | str = contract.DEFAULT_HEIGHT
    quality: str = contract.DEFAULT_QUALITY
    version: str | None = None


def _request(raw: Any, defaults: ItemDefaults) -> ImageRequest:
    if isinstance(raw, NotJson):
        raise DoitongValidationError(f"not JSON ({raw.reason})", field="prompt")
    if isinstance(raw, str):
        values: Mapping[str, Any] = {"prompt": raw}
    elif isinstance(raw, Mapping):
        unknown = sorted(str(key) for key in raw if key not in ITEM_KEYS)
        if unknown:
            raise DoitongValidationError(
                f"unknown key(s) {', '.join(unknown)}; an item may have {', '.join(sorted(ITEM_KEYS))}",
                field=unknown[0],
            )
        if "prompt" not in raw:
            raise DoitongValidationError("an item needs a prompt", field="prompt")
        values = raw
    else:
        raise DoitongValidationError(
            f"an item is a prompt or an object, got {type(raw).__name__}", field="prompt"
        )
    return ImageRequest(
        provider=values.get("provider", defaults.provider),
        prompt=values["prompt"],
        width=values.get("width", defaults.width),
        height=values.get("height", defaults.height),
        quality=values.get("quality", defaults.quality),
        version=values.get("version", defaults.version) or None,
    )


def _shown(raw: Any) -> str:
    """The start of an entry's prompt for a message, every character that shows nothing escaped."""
    text = raw if isinstance(raw, str) else (raw.get("prompt") if isinstance(raw, Mapping) else None)
    if not isinstance(text, str):
        return ""
    text = text if len(text) <= 60 else text[:57] + "..."
    return f" ({''.join(_escaped(char) for char in repr(text))})"


def _escaped(char: str) -> str:
    if char == " " or unicodedata.category(char)[0] in "LNPSM":
        return char
    return f"\\u{ord(char):04x}"


def build_items(entries: Iterable[tuple[str, Any]], defaults: ItemDefaults) -> tuple[ItemList, int]:
    """Validate every entry, reporting every bad one at once; repeated items are kept once.

    Entries are consumed one at a time and each kept compactly (:class:`ItemList`); each set of
    options is checked once (:class:`ImageRequest` with a placeholder prompt), each prompt on its
    own, by the same rules. A prompts file (:class:`~.entries.FileEntries`) is read a block of
    lines at a time, and a line of the common form (a prompt; an object of a prompt and options
    already checked) kept without an entry made for it; any other line is checked as an entry.

    :param entries: ``(source, prompt or item dict)`` pairs, in order.
    :param defaults: the options items do not set.
    :return: the items, and how many repeats were dropped.
    :raises BatchInputError: naming each invalid entry and why.
    """
    builder = _Builder(defaults)
    if isinstance(entries, FileEntries):
        builder.add_file(entries)
    else:
        for source, raw in entries:
            builder.add(source, raw)
    if builder.problems:
        raise BatchInputError(
            f"{len(builder.problems)} of {builder.total} items are invalid; nothing was submitted: "
            + join_problems(builder.problems)
        )
    return builder.items, builder.repeats


#: What makes a line's items: its options' key maker and their number in the :class:`ItemList`.
_LineOptions = tuple[Callable[[str], bytes], int]


class _Builder:
    """:func:`build_items`' work: the items kept, the problems found, the options checked."""

    def __init__(self, defaults: ItemDefaults) -> None:
        self.defaults = defaults
        self.items = ItemList()
        self.problems: list[str] = []
        self.total = self.repeats = 0
        self.seen = KeyTable()
        self.checked: dict[Any, ImageRequest | DoitongValidationError] = {}
        self.keyers: dict[int, tuple[ImageRequest, Callable[[str], bytes]]] = {}
        self.plain = _checked_options(_defaults(defaults), self.checked)
        #: a line's options (its item without the prompt) by their items and types, as checked
        self.line_options: dict[Any, _LineOptions] = {}

    def add(self, source: str, raw: Any) -> None:
        """Check an entry (a prompt, an item dict, a :class:`NotJson`): kept, a repeat, or a problem."""
        self.total += 1
        try:
            if type(raw) is str and isinstance(self.plain, ImageRequest):
                options, prompt = self.plain, checked_prompt(raw)
            else:
                options, prompt = _options_and_prompt(raw, self.defaults, self.checked)
        except DoitongValidationError as exc:
            self.problems.append(f"{source}{_shown(raw)}: {exc.message}")
            return
        found = self.keyers.get(id(options))
        if found is None:  # kept with its options, so that their id is not reused
            found = self.keyers[id(options)] = (options, short_keyer(options))
        raw_key = found[1](prompt)
        if self.seen.add(raw_key):
            self.items.append_keyed(options, prompt, source=source, raw_key=raw_key)
        else:
            self.repeats += 1

    def add_file(self, entries: FileEntries) -> None:
        """Check a prompts file's lines: one of the common form kept here, any other an entry for
        :meth:`add` (which names what is wrong with it, as for any entry)."""
        plain = self.plain
        if not isinstance(plain, ImageRequest) or entries.started:  # defaults refused: each line says so
            for source, raw in entries:
                self.add(source, raw)
            return
        found = (short_keyer(plain), self.items.shape(plain, "line"))
        self.seen = KeyTable.for_keys((entries.size() or 0) // BYTES_PER_LINE)  # none seen yet
        if entries.jsonl:
            self._json_lines(entries, found)
        else:
            self._prompt_lines(entries, found)

    def _prompt_lines(self, entries: FileEntries, plain: _LineOptions) -> None:
        """A plain prompts file's lines (see :func:`~.entries.iter_entries`), each a prompt."""
        keyer, shape = plain
        number = 0
        for block in entries.blocks():
            prompts: list[str] = []
            numbers: list[int] = []
            for line in block:
                number += 1
                text = line.strip()
                if not text or text[0] == "#":
                    continue
                try:
                    prompts.append(checked_prompt(text))
                except DoitongValidationError:  # the lines before it kept first, in their order
                    self._keep(prompts, numbers, list(map(keyer, prompts)), shape)
                    prompts, numbers = [], []
                    self.add(f"line {number}", text)
                    continue
                numbers.append(number)
            self._keep(prompts, numbers, list(map(keyer, prompts)), shape)

    def _json_lines(self, entries: FileEntries, plain: _LineOptions) -> None:
        """A JSON Lines file's lines (see :func:`~.entries.iter_entries`): an object of a prompt and
        options already checked kept here; any other line (not JSON, not such an object, options
        not yet checked) read again by ``json.loads`` and checked as an entry."""
        scan, known = _scan_json, self.line_options
        number = 0
        for block in entries.blocks():
            prompts: list[str] = []
            numbers: list[int] = []
            found: list[_LineOptions] = []
            for line in block:
                number += 1
                text = line.strip()
                if not text or text[0] == "#":
                    continue
                options: _LineOptions | None = None
                try:
                    raw, end = scan(text, 0)
                    if end == len(text) and type(raw) is dict:
                        value = raw.pop("prompt")
                        if not raw:
                            options = plain
                        else:
                            options = known.get((tuple(raw.items()), tuple(map(type, raw.values()))))
                            options = options or self._line_options(raw)
                        prompt = checked_prompt(value)
                except (StopIteration, ValueError, KeyError, TypeError):
                    options = None
                if options is None:  # the lines before it kept first, in their order
                    self._keep_found(prompts, numbers, found)
                    prompts, numbers, found = [], [], []
                    self.add(f"line {number}", json_entry(text))
                    continue
                prompts.append(prompt)
                numbers.append(number)
                found.append(options)
            self._keep_found(prompts, numbers, found)

    def _keep_found(self, prompts: list[str], numbers: list[int], found: list[_LineOptions]) -> None:
        keys = [keyer(prompt) for (keyer, _), prompt in zip(found, prompts, strict=True)]
        self._keep(prompts, numbers, keys, [shape for _, shape in found])

    def _keep(
        self, prompts: list[str], numbers: list[int], keys: list[bytes], shape: int | list[int]
    ) -> None:
        """Keep checked lines (see :meth:`ItemList.extend_lines`) but the repeats."""
        self.total += len(prompts)
        fresh = self.seen.fresh(keys)
        if not all(fresh):
            self.repeats += fresh.count(False)
            prompts, numbers = list(compress(prompts, fresh)), list(compress(numbers, fresh))
            keys = list(compress(keys, fresh))
            shape = shape if isinstance(shape, int) else list(compress(shape, fresh))
        self.items.extend_lines(prompts, keys, numbers, shape)

    def _line_options(self, raw: dict[str, Any]) -> _LineOptions | None:
        """What makes the items of a line whose object, without its prompt, is ``raw``, remembered
        (by its items and their types: ``512`` and ``512.0`` are not the same option); ``None``
        where ``raw`` is not options, or they are refused (:meth:`add` names why)."""
        if not raw.keys() <= _OPTION_KEYS:
            return None
        defaults = self.defaults
        options = _checked_options(
            tuple(raw.get(name, getattr(defaults, name)) for name in _OPTION_NAMES), self.checked
        )
        if not isinstance(options, ImageRequest):
            return None
        found = (short_keyer(options), self.items.shape(options, "line"))
        if len(self.line_options) < MAX_OPTION_SETS:
            self.line_options[(tuple(raw.items()), tuple(map(type, raw.values())))] = found
        return found


def _defaults(defaults: ItemDefaults) -> tuple[Any, ...]:
    return tuple(getattr(defaults, name) for name in _OPTION_NAMES)


def _options_and_prompt(
    raw: Any, defaults: ItemDefaults, checked: dict[Any, ImageRequest | DoitongValidationError]
) -> tuple[ImageRequest, str]:
    """An entry's checked options (a request for a placeholder prompt, shared by every entry with
    the same options) and its checked prompt; where the options are refused, or the entry is not
    a prompt nor an item of known keys, :func:`_request` checks it all, in its order.

    :raises DoitongValidationError: naming the entry's first problem.
    """
    if type(raw) is dict and "prompt" in raw and raw.keys() <= ITEM_KEYS:
        chosen = tuple(raw.get(name, getattr(defaults, name)) for name in _OPTION_NAMES)
        options = _checked_options(chosen, checked)
        if isinstance(options, ImageRequest):
            return options, checked_prompt(raw["prompt"])
    request = _request(raw, defaults)
    return request, request.prompt


def _checked_options(
    chosen: tuple[Any, ...], checked: dict[Any, ImageRequest | DoitongValidationError]
) -> ImageRequest | DoitongValidationError | None:
    """``(provider, width, height, quality, version)`` checked, or why not, remembered in ``checked``
    by type and value (``512`` and ``512.0``, ``True`` and ``1`` are not the same option); ``None``
    for an option that is a list or an object."""
    try:
        key = tuple((type(value), value) for value in chosen)
        found = checked.get(key)
    except TypeError:
        return None
    if found is None:
        provider, width, height, quality, version = chosen
        try:
            found = ImageRequest(
                provider=provider,
                prompt="x",
                width=width,
                height=height,
                quality=quality,
                version=version or None,
            )
        except DoitongValidationError as exc:
            found = exc
        if len(checked) < MAX_OPTION_SETS:
            checked[key] = found
    return found


def estimated_credits(items: Iterable[BatchItem], *, only: Iterable[int] | None = None) -> int:
    """[A] What the items (or those at the indices ``only``) should cost in all.

    :param items: the batch's items (an :class:`ItemList` sums them without building any).
    """
    if isinstance(items, ItemList):
        return items.estimated_credits(only)
    if only is not None:
        listed = items if isinstance(items, Sequence) else list(items)
        return sum(listed[index].request.estimated_credits for index in only)
    return sum(item.request.estimated_credits for item in items)


def secret_items_problem(items: Sequence[BatchItem], secrets: Sequence[str], *, conn_id: str) -> str | None:
    """Why the batch must not start because items would send a connection's secret, or ``None``.

    The items are named by their source, never shown (see :func:`~airflow_provider_doitong.client.redaction.secret_problem`).

    :param secrets: the connection's secrets.
    :param conn_id: the connection, named in the message.
    """
    chosen = tuple(secrets)
    if isinstance(items, ItemList):  # the prompts alone looked at first: items are built for those found
        suspects: Iterable[BatchItem] = (items[index] for index in items.holding(chosen))
    else:
        suspects = items
    problems = [
        problem
        for item in suspects
        if (problem := secret_problem(item.request, chosen, conn_id=conn_id, where=item.source)) is not None
    ]
    if not problems:
        return None
    return f"{len(problems)} of {len(items)} items are refused; nothing was submitted: " + join_problems(
        problems
    )
