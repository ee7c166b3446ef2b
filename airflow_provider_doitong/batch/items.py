"""A batch's items: read from a list or a prompts file, every one checked before anything is spent.

Sources: a list of prompts (strings), a list of item dicts (``prompt`` plus any of ``provider``,
``width``, ``height``, ``quality``, ``version``), or a prompts file: one prompt per line (blank
lines and ``#`` comments skipped) or, for a ``.jsonl`` file, one JSON item per line. Repeated
items (the same prompt with the same options) are generated once.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_doitong.batch.item_list import SLUG_MAX_CHARS as SLUG_MAX_CHARS
from airflow_provider_doitong.batch.item_list import BatchItem as BatchItem
from airflow_provider_doitong.batch.item_list import ItemList as ItemList
from airflow_provider_doitong.batch.item_list import slugify as slugify
from airflow_provider_doitong.batch.item_list import trusted_request as trusted_request
from airflow_provider_doitong.client import DoitongValidationError, ImageRequest, contract
from airflow_provider_doitong.client.fingerprint import short_keyer
from airflow_provider_doitong.client.models import checked_prompt
from airflow_provider_doitong.client.redaction import holds_secret, secret_problem
from airflow_provider_doitong.storage import is_local, shown, storage_path

#: The keys an item dict may have.
ITEM_KEYS = frozenset({"prompt", "provider", "width", "height", "quality", "version"})
#: How many problems an error message lists before summarising the rest.
MAX_PROBLEMS_SHOWN = 20


class BatchInputError(ValueError):
    """The batch's input cannot be used; nothing was submitted. The message names every problem."""


@dataclass(frozen=True, kw_only=True)
class ItemDefaults:
    """The options an item does not set itself (the operator's model defaults)."""

    provider: str = "flux-krea"
    width: int | str = contract.DEFAULT_WIDTH
    height: int | str = contract.DEFAULT_HEIGHT
    quality: str = contract.DEFAULT_QUALITY
    version: str | None = None


@dataclass(frozen=True, slots=True)
class NotJson:
    """A JSON Lines line that is not JSON, kept in the stream so that it is reported with the rest."""

    reason: str


def iter_entries(lines: Iterable[str], *, jsonl: bool) -> Iterator[tuple[str, Any]]:
    """``(source, prompt or item)`` for every line that is neither blank nor a ``#`` comment, one at a
    time: a file of a million lines is never held whole.

    :param lines: the file's lines (a text file object iterates them).
    :param jsonl: each line is a JSON item; one that is not JSON comes as a :class:`NotJson`.
    """
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not jsonl:
            yield f"line {number}", stripped
            continue
        try:
            yield f"line {number}", json.loads(stripped)
        except json.JSONDecodeError as exc:
            yield f"line {number}", NotJson(exc.msg)


def parse_prompt_lines(text: str) -> list[tuple[str, Any]]:
    """``(source, prompt)`` for every line that is neither blank nor a ``#`` comment.

    :param text: a prompts file's text.
    """
    return list(iter_entries(text.splitlines(), jsonl=False))


def parse_jsonl(text: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """``(source, item)`` for every non-blank line of a JSON Lines file, and the lines that are not JSON.

    :param text: the file's text.
    """
    out: list[tuple[str, Any]] = []
    problems: list[str] = []
    for source, raw in iter_entries(text.splitlines(), jsonl=True):
        if isinstance(raw, NotJson):
            problems.append(f"{source}: not JSON ({raw.reason})")
        else:
            out.append((source, raw))
    return out, problems


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
    own, by the same rules.

    :param entries: ``(source, prompt or item dict)`` pairs, in order.
    :param defaults: the options items do not set.
    :return: the items, and how many repeats were dropped.
    :raises BatchInputError: naming each invalid entry and why.
    """
    items = ItemList()
    problems: list[str] = []
    seen: set[int] = set()
    checked: dict[Any, ImageRequest | DoitongValidationError] = {}
    keyers: dict[int, tuple[ImageRequest, Callable[[str], bytes]]] = {}
    plain = _checked_options(_defaults(defaults), checked)
    repeats = total = 0
    for source, raw in entries:
        total += 1
        try:
            if type(raw) is str and isinstance(plain, ImageRequest):
                options, prompt = plain, checked_prompt(raw)
            else:
                options, prompt = _options_and_prompt(raw, defaults, checked)
        except DoitongValidationError as exc:
            problems.append(f"{source}{_shown(raw)}: {exc.message}")
            continue
        found = keyers.get(id(options))
        if found is None:  # kept with its options, so that their id is not reused
            found = keyers[id(options)] = (options, short_keyer(options))
        raw_key = found[1](prompt)
        digest = int.from_bytes(raw_key, "big")
        if digest in seen:
            repeats += 1
            continue
        seen.add(digest)
        items.append_keyed(options, prompt, source=source, raw_key=raw_key)
    if problems:
        raise BatchInputError(
            f"{len(problems)} of {total} items are invalid; nothing was submitted: " + _join(problems)
        )
    return items, repeats


#: The most sets of options :func:`build_items` remembers having checked.
MAX_OPTION_SETS = 4096
_OPTION_NAMES = ("provider", "width", "height", "quality", "version")


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


def _join(problems: Sequence[str]) -> str:
    shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown += f"; and {len(problems) - MAX_PROBLEMS_SHOWN} more"
    return shown


def entries_from_text(text: str, *, jsonl: bool) -> list[tuple[str, Any]]:
    """The entries of a prompts file.

    :param text: its text.
    :param jsonl: read it as JSON Lines (one item per line) rather than one prompt per line.
    :raises BatchInputError: for lines of a JSON Lines file that are not JSON.
    """
    if not jsonl:
        return parse_prompt_lines(text)
    entries, problems = parse_jsonl(text)
    if problems:
        raise BatchInputError(
            f"{len(problems)} lines are not JSON; nothing was submitted: " + _join(problems)
        )
    return entries


def entries_from_list(prompts: Any) -> list[tuple[str, Any]]:
    """The entries of a ``prompts`` argument: a list of prompts or item dicts.

    :param prompts: the rendered ``prompts``.
    :raises BatchInputError: if it is not a list.
    """
    if isinstance(prompts, str | bytes) or not isinstance(prompts, Sequence):
        raise BatchInputError(f"prompts must be a list of prompts or items, got {type(prompts).__name__}")
    return [(f"item {number}", raw) for number, raw in enumerate(prompts, start=1)]


def load_entries(*, prompts: Any, prompts_file: str | None) -> Iterable[tuple[str, Any]]:
    """The entries of a batch, from ``prompts`` or from ``prompts_file`` (streamed: read line by line
    as they are consumed, never held whole; see :func:`iter_entries`).

    :param prompts: a list of prompts or items; a string is read as a JSON list (a template rendered
        without native objects, e.g. with ``| tojson``).
    :param prompts_file: a local path or an ``ObjectStoragePath`` URI, used when ``prompts`` is ``None``.
    :raises BatchInputError: if the list or file cannot be read.
    """
    if prompts_file is None:
        if isinstance(prompts, str):
            try:
                prompts = json.loads(prompts)
            except ValueError:
                raise BatchInputError(
                    "prompts rendered to a string that is not a JSON list; pass a list, an XComArg, or "
                    "render it with `| tojson`"
                ) from None
        return entries_from_list(prompts)
    path = storage_path(str(prompts_file))
    if not path.exists():
        raise BatchInputError(f"The prompts file {shown(path)} does not exist")
    return _file_entries(path)


def _file_entries(path: Any) -> Iterator[tuple[str, Any]]:
    """A prompts file's entries, read as they are consumed (a local file directly, not through the
    object-storage layer)."""
    try:
        handle = open(path.path, encoding="utf-8") if is_local(path) else path.open("r", encoding="utf-8")
        with handle:
            yield from iter_entries(handle, jsonl=path.name.endswith(".jsonl"))
    except FileNotFoundError:
        raise BatchInputError(f"The prompts file {shown(path)} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchInputError(f"Cannot read the prompts file {shown(path)}: {exc}") from None


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


def budget_problem(
    *,
    images: int,
    estimate: int,
    to_spend: int,
    balance: int | None,
    max_credits: int | None,
    credit_floor: int | None = None,
) -> str | None:
    """Why a batch must not start, or ``None``.

    :param images: how many images the batch has.
    :param estimate: the estimated credits of the whole batch (what a first try spends).
    :param to_spend: the estimate of what is still to be bought (less on a retry).
    :param balance: the account's credit balance, if read.
    :param max_credits: the most the whole batch may spend, if capped.
    :param credit_floor: the balance the batch must leave the account at, if any.
    """
    if max_credits is not None and estimate > max_credits:
        return (
            f"{images} images are estimated at {estimate} credits, over max_credits={max_credits}; "
            "nothing was submitted"
        )
    if balance is not None and to_spend > balance:
        return (
            f"Not enough Doitong credits: the images still to generate are estimated at {to_spend} "
            f"credits, the account balance is {balance}; nothing was submitted"
        )
    if balance is not None and credit_floor is not None and balance - to_spend < credit_floor:
        return (
            f"The images still to generate are estimated at {to_spend} credits: they would take the "
            f"account from {balance} to {balance - to_spend} credits, below its credit floor of "
            f"{credit_floor}; nothing was submitted"
        )
    return None


def secret_items_problem(items: Sequence[BatchItem], secrets: Sequence[str], *, conn_id: str) -> str | None:
    """Why the batch must not start because items would send a connection's secret, or ``None``.

    The items are named by their source, never shown (see :func:`~airflow_provider_doitong.client.redaction.secret_problem`).

    :param secrets: the connection's secrets.
    :param conn_id: the connection, named in the message.
    """
    chosen = tuple(secrets)
    if isinstance(items, ItemList):  # the prompts alone looked at first: items are built for those found
        found = [index for index, prompt in items.prompts() if holds_secret(prompt, chosen)]
        suspects: Iterable[BatchItem] = (items[index] for index in found)
    else:
        suspects = items
    problems = [
        problem
        for item in suspects
        if (problem := secret_problem(item.request, chosen, conn_id=conn_id, where=item.source)) is not None
    ]
    if not problems:
        return None
    return f"{len(problems)} of {len(items)} items are refused; nothing was submitted: " + _join(problems)
