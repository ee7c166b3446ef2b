"""The emulator's state (jobs, balances, counters) as a JSON record, and saving and loading it."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doitong_emulator.jobs import Job
from doitong_emulator.stats import Stats

if TYPE_CHECKING:
    from doitong_emulator.state import EmulatorState

log = logging.getLogger(__name__)

STATE_FORMAT_VERSION = 1


def state_record(state: EmulatorState) -> dict[str, Any]:
    """Jobs, balances and counters as a JSON-ready dict (no keys nor secrets). Call under the lock."""
    return {
        "version": STATE_FORMAT_VERSION,
        "saved_at": state.clock(),
        "accounts": {
            a.name: {
                "credits": a.credits,
                "daily_day": a.daily.day,
                "daily_count": a.daily.count,
                "max_in_flight": a.max_in_flight,
            }
            for a in state.accounts
        },
        "jobs": [job.to_record() for job in state.jobs.values()],
        "stats": state.stats.to_record(),
    }


def restore_record(state: EmulatorState, record: dict[str, Any]) -> None:
    """Replace jobs, balances and counters with saved ones; accounts are matched by name.

    Call under the state's lock.

    :raises ValueError: for an unknown format version.
    """
    if record.get("version") != STATE_FORMAT_VERSION:
        raise ValueError(f"unsupported state format {record.get('version')!r}")
    state.reset()
    for name, saved in record.get("accounts", {}).items():
        account = state.registry.get(name)
        if account is None:
            log.warning("The saved state names an account %s that is not configured", name)
            continue
        account.credits = int(saved["credits"])
        account.daily.day = str(saved.get("daily_day", ""))
        account.daily.count = int(saved.get("daily_count", 0))
        account.max_in_flight = int(saved.get("max_in_flight", 0))
    for item in record.get("jobs", []):
        state.adopt(Job.from_record(item))
    state.stats = Stats.from_record(record.get("stats", {}))


def save_state(state: EmulatorState, path: str | os.PathLike[str]) -> None:
    """Write the state atomically (a temporary file renamed over ``path``).

    The file holds jobs, balances and counters keyed by account name; no API key nor secret.
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
    """Load a state file if it exists; return whether one was loaded."""
    source = Path(path)
    if not source.exists():
        return False
    with source.open(encoding="utf-8") as handle:
        state.load_record(json.load(handle))
    log.info("Loaded the emulator state (%d jobs) from %s", len(state.jobs), source)
    return True
