"""A batch's items: read from a list or a prompts file, every one checked before anything is spent.

Sources: a list of prompts (strings), a list of item dicts (``prompt`` plus any of ``provider``,
``width``, ``height``, ``quality``, ``version``), or a prompts file: one prompt per line (blank
lines and ``#`` comments skipped) or, for a ``.jsonl`` file, one JSON item per line. Repeated
items (the same prompt with the same options) are generated once.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_doitong.client import DoitongValidationError, ImageRequest, contract
from airflow_provider_doitong.client.fingerprint import short_fingerprint
from airflow_provider_doitong.client.redaction import secret_problem
from airflow_provider_doitong.storage import is_local, shown, storage_path

#: The keys an item dict may have.
ITEM_KEYS = frozenset({"prompt", "provider", "width", "height", "quality", "version"})
#: How many problems an error message lists before summarising the rest.
MAX_PROBLEMS_SHOWN = 20
#: The longest slug in an image's file name.
SLUG_MAX_CHARS = 40


class BatchInputError(ValueError):
    """The batch's input cannot be used; nothing was submitted. The message names every problem."""


@dataclass(frozen=True, kw_only=True, slots=True)
class BatchItem:
    """One image of a batch (slotted: a batch may hold a million of them).

    :param index: its position in the batch, from 0; it names the image file and keys the ledger.
    :param source: where it came from, for messages (``line 12``, ``item 3``).
    :param key: the request's fingerprint, if already computed (:func:`build_items` does, once).
    """

    index: int
    request: ImageRequest
    source: str
    key: str = ""

    @property
    def fingerprint(self) -> str:
        """A digest of the request, so a ledger written for other prompts is never applied to these."""
        return self.key or short_fingerprint(self.request)

    def stem(self, total: int) -> str:
        """The image's file name without extension: ``0007-a-fox-in-the-snow``.

        :param total: the batch's size, which sets the number's width (at least four digits).
        """
        width = max(4, len(str(total)))
        return f"{self.index + 1:0{width}d}-{slugify(self.request.prompt)}"


def trusted_request(
    *, prompt: str, provider: str, width: int, height: int, quality: str, version: str | None
) -> ImageRequest:
    """A request rebuilt from the batch's own saved items (:mod:`.saved_items`), whose digest was
    checked: every field was checked when the batch first read it, so none is checked again but
    for its type (a million prompts would take seconds). Never for a value read from anywhere else."""
    if not (
        type(prompt) is str
        and type(provider) is str
        and type(width) is int
        and type(height) is int
        and type(quality) is str
        and (version is None or type(version) is str)
    ):
        raise TypeError("a saved item holds a value of the wrong type")
    request = _new(ImageRequest)
    _set_prompt(request, prompt)
    _set_provider(request, provider)
    _set_width(request, width)
    _set_height(request, height)
    _set_quality(request, quality)
    _set_version(request, version)
    _set_webhook_url(request, None)
    return request


# The slots' own setters: a frozen dataclass refuses ``setattr``, and ``__init__`` would check again.
_new = object.__new__
_slots: dict[str, Any] = dict(vars(ImageRequest))
_set_prompt = _slots["prompt"].__set__
_set_provider = _slots["provider"].__set__
_set_width = _slots["width"].__set__
_set_height = _slots["height"].__set__
_set_quality = _slots["quality"].__set__
_set_version = _slots["version"].__set__
_set_webhook_url = _slots["webhook_url"].__set__


def slugify(text: str) -> str:
    """Lower-case ASCII words joined by ``-``, at most :data:`SLUG_MAX_CHARS` long; ``image`` if none.

    :param text: a prompt.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    words = re.findall(r"[a-z0-9]+", ascii_text.lower())
    slug = ""
    for word in words:
        candidate = f"{slug}-{word}" if slug else word
        if len(candidate) > SLUG_MAX_CHARS:
            break
        slug = candidate
    return slug or (words[0][:SLUG_MAX_CHARS] if words else "image")


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


def build_items(entries: Iterable[tuple[str, Any]], defaults: ItemDefaults) -> tuple[list[BatchItem], int]:
    """Validate every entry, reporting every bad one at once; repeated items are kept once.

    :param entries: ``(source, prompt or item dict)`` pairs, in order.
    :param defaults: the options items do not set.
    :return: the items, and how many repeats were dropped.
    :raises BatchInputError: naming each invalid entry and why.
    """
    items: list[BatchItem] = []
    problems: list[str] = []
    seen: set[str] = set()
    repeats = 0
    total = 0
    for source, raw in entries:
        total += 1
        try:
            request = _request(raw, defaults)
        except DoitongValidationError as exc:
            problems.append(f"{source}{_shown(raw)}: {exc.message}")
            continue
        key = short_fingerprint(request)
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        items.append(BatchItem(index=len(items), request=request, source=source, key=key))
    if problems:
        raise BatchInputError(
            f"{len(problems)} of {total} items are invalid; nothing was submitted: " + _join(problems)
        )
    return items, repeats


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


def estimated_credits(items: Iterable[BatchItem]) -> int:
    """[A] What the items should cost in all."""
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
    problems = [
        problem
        for item in items
        if (problem := secret_problem(item.request, secrets, conn_id=conn_id, where=item.source)) is not None
    ]
    if not problems:
        return None
    return f"{len(problems)} of {len(items)} items are refused; nothing was submitted: " + _join(problems)
