"""Durations as parameters take them, and instants as messages show them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def seconds(value: float | timedelta | None) -> float | None:
    """A duration parameter (seconds or a ``timedelta``) in seconds; ``None`` stays ``None``."""
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def utc_iso(unix_time: float) -> str:
    """A Unix time as ISO 8601 UTC to the second; a time no calendar holds is shown as a number.

    The time may come from an answer (a reset header), so an absurd one is shown, never a crash.
    """
    try:
        return datetime.fromtimestamp(unix_time, tz=timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"Unix time {unix_time:.0f}"
