"""Where a batch's entries come from: a list of prompts or item dicts, or a prompts file, read as
``(source, prompt or item)`` pairs for :func:`~airflow_provider_doitong.batch.items.build_items`.

A prompts file holds one prompt per line (blank lines and ``#`` comments skipped) or, for a
``.jsonl`` file, one JSON item per line. It is streamed: read a block of lines at a time as its
entries are consumed, never held whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_doitong.storage import is_local, shown, storage_path

#: How many problems an error message lists before summarising the rest.
MAX_PROBLEMS_SHOWN = 20
#: About how many bytes of a prompts file are read at once (whole lines).
BLOCK_BYTES = 1 << 20


class BatchInputError(ValueError):
    """The batch's input cannot be used; nothing was submitted. The message names every problem."""


@dataclass(frozen=True, slots=True)
class NotJson:
    """A JSON Lines line that is not JSON, kept in the stream so that it is reported with the rest."""

    reason: str


def json_entry(line: str) -> Any:
    """A JSON Lines line's item (the line stripped), or a :class:`NotJson` saying why it is none."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return NotJson(exc.msg)


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
        yield f"line {number}", json_entry(stripped) if jsonl else stripped


class FileEntries(Iterator[tuple[str, Any]]):
    """A prompts file's entries (see :func:`iter_entries`), read as they are consumed;
    :func:`~airflow_provider_doitong.batch.items.build_items` reads its lines a block at a time
    (:meth:`blocks`) instead.

    :param path: a storage path (local, or an ``ObjectStoragePath``) that exists.
    """

    def __init__(self, path: Any) -> None:
        self.path = path
        #: each line is a JSON item (a ``.jsonl`` file), not a prompt
        self.jsonl: bool = path.name.endswith(".jsonl")
        self._entries: Iterator[tuple[str, Any]] | None = None

    def __next__(self) -> tuple[str, Any]:
        if self._entries is None:
            lines = (line for block in self.blocks() for line in block)
            self._entries = iter_entries(lines, jsonl=self.jsonl)
        return next(self._entries)

    @property
    def started(self) -> bool:
        """Whether entries were taken from it already (:meth:`blocks` would read them again)."""
        return self._entries is not None

    def size(self) -> int | None:
        """The file's size in bytes, if it is local (``None`` otherwise, or if it cannot be read)."""
        try:
            return os.path.getsize(self.path.path) if is_local(self.path) else None
        except OSError:
            return None

    def blocks(self) -> Iterator[list[str]]:
        """The file's lines, in lists of about :data:`BLOCK_BYTES` (a local file read directly, not
        through the object-storage layer).

        :raises BatchInputError: if the file cannot be read, or is not UTF-8.
        """
        path = self.path
        try:
            local = is_local(path)
            handle = open(path.path, encoding="utf-8") if local else path.open("r", encoding="utf-8")
            with handle:
                while block := handle.readlines(BLOCK_BYTES):
                    yield block
        except FileNotFoundError:
            raise BatchInputError(f"The prompts file {shown(path)} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise BatchInputError(f"Cannot read the prompts file {shown(path)}: {exc}") from None


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


def join_problems(problems: Sequence[str]) -> str:
    """The first :data:`MAX_PROBLEMS_SHOWN` problems, and how many more."""
    shown_problems = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
    if len(problems) > MAX_PROBLEMS_SHOWN:
        shown_problems += f"; and {len(problems) - MAX_PROBLEMS_SHOWN} more"
    return shown_problems


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
            f"{len(problems)} lines are not JSON; nothing was submitted: " + join_problems(problems)
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
    """The entries of a batch, from ``prompts`` or from ``prompts_file`` (streamed: a
    :class:`FileEntries`).

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
    return FileEntries(path)
