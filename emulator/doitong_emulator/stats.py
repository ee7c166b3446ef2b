"""Counters the emulator keeps about what clients did, and the per-request log."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

#: Request kinds counted by :class:`Stats`.
KIND_SUBMIT = "submit"
KIND_STATUS = "status"
KIND_ACCOUNT = "account"
KIND_DOWNLOAD = "download"
KIND_OTHER = "other"
KINDS = (KIND_SUBMIT, KIND_STATUS, KIND_ACCOUNT, KIND_DOWNLOAD, KIND_OTHER)
#: The status recorded for a request whose connection was dropped without an answer.
STATUS_DROPPED = 0
#: Entries kept in the request log.
REQUEST_LOG_SIZE = 500_000


@dataclass
class Stats:
    """Request and job counters. Not thread-safe by itself; the state's lock guards it."""

    submissions_by_prompt: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    jobs_read: int = 0
    http_429: int = 0
    http_5xx: int = 0
    dropped: int = 0
    max_in_flight: int = 0
    jobs_total: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    jobs_stuck: int = 0
    webhook_attempts: int = 0
    webhooks_delivered: int = 0
    webhooks_failed: int = 0
    log: deque[tuple[float, str, int, str | None]] = field(
        default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE)
    )
    #: ``(Unix time, job id)`` of every job read, the last :data:`REQUEST_LOG_SIZE`.
    reads: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_SIZE))

    def record_request(self, t: float, kind: str, status: int, *, form: str | None = None) -> None:
        """Count one API request and log it.

        :param t: when it arrived (Unix time).
        :param kind: one of :data:`KINDS`.
        :param status: the HTTP status answered, or :data:`STATUS_DROPPED`.
        :param form: how it was sent: the GraphQL field asked (``generate``, ``generateImage``,
            ``job``, ``account``), ``rest``, or ``None`` (downloads, unreadable bodies).
        """
        self.requests[kind] += 1
        if status == STATUS_DROPPED:
            self.dropped += 1
        elif status == 429:
            self.http_429 += 1
        elif status >= 500:
            self.http_5xx += 1
        self.log.append((t, kind, status, form))

    def read_log(self) -> list[dict[str, Any]]:
        """Every logged job read as ``{"t", "job"}`` (a request that reads several jobs: one each)."""
        return [{"t": t, "job": job_id} for t, job_id in self.reads]

    def request_log(self) -> list[dict[str, Any]]:
        """Every logged request as ``{"t", "kind", "status", "form"}``."""
        return [{"t": t, "kind": kind, "status": status, "form": form} for t, kind, status, form in self.log]

    def to_record(self) -> dict[str, Any]:
        """The counters (not the log) as a JSON-ready dict, for the state file."""
        return {
            "submissions_by_prompt": dict(self.submissions_by_prompt),
            "requests": dict(self.requests),
            "jobs_read": self.jobs_read,
            "http_429": self.http_429,
            "http_5xx": self.http_5xx,
            "dropped": self.dropped,
            "max_in_flight": self.max_in_flight,
            "jobs_total": self.jobs_total,
            "jobs_completed": self.jobs_completed,
            "jobs_failed": self.jobs_failed,
            "jobs_stuck": self.jobs_stuck,
            "webhook_attempts": self.webhook_attempts,
            "webhooks_delivered": self.webhooks_delivered,
            "webhooks_failed": self.webhooks_failed,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Stats:
        """Rebuild counters saved by :meth:`to_record`.

        :param record: the saved dict.
        """
        stats = cls()
        for key, value in record.items():
            if key in ("submissions_by_prompt", "requests"):
                setattr(stats, key, Counter(value))
            elif hasattr(stats, key) and key != "log":
                setattr(stats, key, int(value))
        return stats
