"""Progress a person can follow: a batch's counts, credits and ETA."""

from __future__ import annotations

import math
from collections.abc import Iterable

from airflow_provider_doitong.batch.ledger import ItemRecord, ItemState, Ledger
from airflow_provider_doitong.batch.planner import Planner


def eta_seconds(*, remaining: int, running: int, concurrency: int, typical: float | None) -> float | None:
    """Roughly how long the rest of the batch takes: the running wave, then whole waves of the plan's slots.

    :param remaining: items not yet finished (running ones included).
    :param running: jobs running now.
    :param concurrency: the plan's job slots.
    :param typical: the typical job duration, if known.
    """
    if typical is None:
        return None
    if remaining <= 0:
        return 0.0
    waiting = max(0, remaining - running)
    return typical * (1 + math.ceil(waiting / max(1, concurrency)))


def credits_spent(records: Iterable[ItemRecord]) -> int:
    """Credits charged for the images completed so far (failed jobs are refunded)."""
    return sum(r.credits or 0 for r in records if r.state in (ItemState.COMPLETED, ItemState.STORED))


def clock_text(seconds: float) -> str:
    """``H:MM:SS``.

    :param seconds: a duration.
    """
    whole = int(round(seconds))
    return f"{whole // 3600:d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def progress_line(
    *, done: int, total: int, failed: int, running: int, credits: int, eta: float | None
) -> str:
    """``12/30 done, 0 failed, 10 running, 120 credits spent, ETA 0:00:40``.

    :param done: items stored.
    :param total: the batch's items.
    :param failed: items failed for good.
    :param running: jobs running now.
    :param credits: credits charged so far.
    :param eta: seconds left, if known.
    """
    return (
        f"{done}/{total} done, {failed} failed, {running} running, {credits} credits spent, "
        f"ETA {'unknown' if eta is None else clock_text(eta)}"
    )


def progress_line_of(ledger: Ledger, planner: Planner) -> str:
    """The progress line of a batch as its ledger and planner stand.

    :param planner: its planner (the plan's slots and the typical job duration).
    """
    done, failed = ledger.count(ItemState.STORED), ledger.count(ItemState.FAILED)
    running = ledger.count(ItemState.RUNNING)
    total = len(ledger.records)
    eta = eta_seconds(
        remaining=total - done - failed,
        running=running,
        concurrency=planner.limits.concurrency,
        typical=planner.typical_duration,
    )
    return progress_line(
        done=done, total=total, failed=failed, running=running, credits=credits_spent(ledger), eta=eta
    )
