"""Saving and loading the emulator's state (jobs, balances, counters) as JSON."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from doitong_emulator.state import EmulatorState

log = logging.getLogger(__name__)


def save_state(state: EmulatorState, path: str | os.PathLike[str]) -> None:
    """Write the state atomically (a temporary file renamed over ``path``).

    The file holds jobs, balances and counters keyed by account name; no API key nor secret.

    :param state: the state.
    :param path: the state file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    record = state.to_record()
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("Saved the emulator state (%d jobs) to %s", len(record["jobs"]), target)


def load_state(state: EmulatorState, path: str | os.PathLike[str]) -> bool:
    """Load a state file if it exists.

    :param state: the state to fill.
    :param path: the state file.
    :return: whether a file was loaded.
    """
    source = Path(path)
    if not source.exists():
        return False
    with source.open(encoding="utf-8") as handle:
        state.load_record(json.load(handle))
    log.info("Loaded the emulator state (%d jobs) from %s", len(state.jobs), source)
    return True
