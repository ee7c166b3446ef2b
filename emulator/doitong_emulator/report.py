"""The counters as ``GET /_emulator/stats`` shows them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from doitong_emulator.accounts import AccountState
from doitong_emulator.jobs import Job
from doitong_emulator.stats import KINDS, Stats


def snapshot(
    *,
    stats: Stats,
    accounts: Iterable[AccountState],
    jobs: Mapping[str, Job],
    active_total: int,
    now: float,
) -> dict[str, Any]:
    """Counters, balances and jobs in flight as one JSON-ready dict."""
    accounts = list(accounts)
    running = sum(1 for job in jobs.values() if not job.status(now).is_terminal)
    return {
        "submissions_by_prompt": dict(stats.submissions_by_prompt),
        "requests": {kind: stats.requests.get(kind, 0) for kind in KINDS},
        "jobs_read": stats.jobs_read,
        "http_429": stats.http_429,
        "http_5xx": stats.http_5xx,
        "dropped": stats.dropped,
        "max_in_flight": {
            "overall": stats.max_in_flight,
            "by_account": {a.name: a.max_in_flight for a in accounts},
        },
        "in_flight": {
            "overall": active_total,
            "by_account": {a.name: len(a.active) for a in accounts},
        },
        "credits": {a.name: a.credits for a in accounts},
        "jobs": {
            "total": stats.jobs_total,
            "completed": stats.jobs_completed,
            "failed": stats.jobs_failed,
            "stuck": stats.jobs_stuck,
            "running": running,
        },
        "webhooks": {
            "attempts": stats.webhook_attempts,
            "delivered": stats.webhooks_delivered,
            "failed": stats.webhooks_failed,
        },
    }
