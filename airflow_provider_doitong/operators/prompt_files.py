"""Prompt files, for both operators: where a relative path points, and reading one prompt as plain text.

A prompt file is data. Its text is never rendered as a Jinja template (only the path may be
templated), so a file holding ``{{ conn.doitong_default.password }}`` is sent as those very
characters, never as the connection's key, and a literal prompt ending in ``.txt`` is a prompt.
"""

from __future__ import annotations

import os
from typing import Any

from airflow_provider_doitong.client import contract
from airflow_provider_doitong.storage import is_local, shown, storage_path

#: The most bytes a single prompt file may hold: a prompt of the longest length in any UTF-8 text.
MAX_PROMPT_FILE_BYTES = 4 * contract.PROMPT_MAX_CHARS + 1024


class PromptFileError(ValueError):
    """A prompt file that cannot be read; nothing was submitted. The message names the file."""


def prompt_file_location(value: Any, dag: Any) -> str:
    """A prompt file's full path or URI: a relative local path is relative to the DAG file's folder.

    :param value: the rendered ``prompt_file`` / ``prompts_file`` argument.
    :param dag: the operator's DAG, or ``None`` before it has one.
    """
    location = os.path.expanduser(str(value))
    if "://" in location or os.path.isabs(location) or dag is None:
        return location
    return os.path.join(os.path.dirname(getattr(dag, "fileloc", None) or ""), location)


def _read_start(path: Any, size: int) -> bytes:
    """The first ``size`` bytes of a file; a local one read directly (not through the object-storage
    layer, which would also report it as an input of any task run later in the same process)."""
    if is_local(path):
        with open(path.path, "rb") as handle:
            return handle.read(size)
    with path.open("rb") as handle:
        data: bytes = handle.read(size)
    return data


def read_prompt_file(location: str) -> str:
    """The text of a one-prompt file, as plain UTF-8 text (never a template).

    :param location: a local path or an ``ObjectStoragePath`` URI.
    :raises PromptFileError: if it is missing, unreadable, too large for a prompt or not UTF-8.
    """
    path = storage_path(location)
    try:
        data = _read_start(path, MAX_PROMPT_FILE_BYTES + 1)
    except FileNotFoundError:
        raise PromptFileError(f"prompt_file {shown(path)} does not exist; nothing was submitted") from None
    except OSError as exc:
        raise PromptFileError(
            f"Cannot read prompt_file {shown(path)} ({type(exc).__name__}); nothing was submitted"
        ) from None
    if len(data) > MAX_PROMPT_FILE_BYTES:
        raise PromptFileError(
            f"prompt_file {shown(path)} holds over {MAX_PROMPT_FILE_BYTES} bytes, more than a prompt of "
            f"{contract.PROMPT_MAX_CHARS} characters; nothing was submitted"
        )
    try:
        return data.decode("utf-8-sig")  # a byte order mark is not part of the prompt
    except UnicodeDecodeError as exc:
        raise PromptFileError(
            f"prompt_file {shown(path)} is not UTF-8 text (byte {exc.start + 1}); nothing was submitted"
        ) from None
