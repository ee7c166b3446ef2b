"""Emulated jobs: what was asked, when each phase ends, and the JSON the API shows."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from typing import Any

from airflow_provider_doitong.client.contract import GENERATION_TYPE, JobStatus

#: Job outcomes decided at submission.
OUTCOME_COMPLETED = "completed"
OUTCOME_FAILED = "failed"
OUTCOME_STUCK = "stuck"


def iso_utc(timestamp: float | None) -> str | None:
    """An ISO-8601 UTC string with milliseconds and a ``Z`` suffix.

    :param timestamp: a Unix time, or ``None``.
    """
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True, kw_only=True)
class JobRequest:
    """A validated submission.

    :param prompt: as the client sent it (untrimmed).
    :param webhook_url: where to POST the terminal notification, if anywhere.
    """

    provider: str
    prompt: str
    width: int
    height: int
    quality: str
    webhook_url: str | None


@dataclass(kw_only=True)
class Job:
    """One job and its timeline (real Unix times).

    :param account: the owning account's name.
    :param started_at: when processing begins (after any queueing).
    :param finish_at: when the job reaches its outcome; ``None`` for a stuck job.
    :param outcome: ``completed``, ``failed`` or ``stuck``.
    :param error_code: the failure code of a failed job.
    :param error_message: the failure message of a failed job.
    :param settled: whether the terminal transition (refund, counters, webhook) was applied.
    :param refunded: whether the credits went back to the account.
    :param webhook: ``none``, ``pending``, ``sending``, ``delivered`` or ``failed``.
    :param webhook_attempts: delivery attempts made.
    """

    id: str
    account: str
    provider: str
    prompt: str
    width: int
    height: int
    quality: str
    webhook_url: str | None
    credit_cost: int
    created_at: float
    started_at: float
    finish_at: float | None
    outcome: str
    error_code: str | None = None
    error_message: str | None = None
    settled: bool = False
    refunded: bool = False
    webhook: str = "none"
    webhook_attempts: int = 0

    def status(self, now: float) -> JobStatus:
        """The status at ``now``.

        :param now: a Unix time.
        """
        if now < self.started_at:
            return JobStatus.QUEUED
        if self.finish_at is None or now < self.finish_at:
            return JobStatus.PROCESSING
        return JobStatus.FAILED if self.outcome == OUTCOME_FAILED else JobStatus.COMPLETED

    def processing_seconds(self) -> float | None:
        """How long processing took, once the job is terminal."""
        if self.finish_at is None:
            return None
        return round(self.finish_at - self.started_at, 3)

    def to_json(self, *, output_url: str, now: float, at_submission: bool = False) -> dict[str, Any]:
        """The job as the API shows it.

        :param output_url: where its output is served (shown once it completed).
        :param now: the Unix time the status is computed at.
        :param at_submission: show the job as just created (``queued`` or ``processing``, no ``url``).
        """
        status = self.status(now)
        if at_submission and status.is_terminal:
            status = JobStatus.PROCESSING
        terminal = status.is_terminal
        duration = self.processing_seconds() if terminal else None
        return {
            "id": self.id,
            "status": status.value,
            "type": GENERATION_TYPE,
            "provider": self.provider,
            "url": output_url if status is JobStatus.COMPLETED else None,
            "width": self.width,
            "height": self.height,
            "metadata": {
                "duration": duration,
                "width": self.width,
                "height": self.height,
                "prompt": self.prompt,
                "quality": self.quality,
            },
            "creditCost": self.credit_cost,
            "webhookUrl": self.webhook_url,
            "duration": duration,
            "error": (
                {"code": self.error_code, "message": self.error_message}
                if status is JobStatus.FAILED
                else None
            ),
            "createdAt": iso_utc(self.created_at),
            "completedAt": iso_utc(self.finish_at) if terminal else None,
        }

    def webhook_payload(self, *, output_url: str) -> dict[str, Any]:
        """The contract's webhook payload for this (terminal) job.

        :param output_url: where its output is served.
        """
        status = self.status(self.finish_at if self.finish_at is not None else float("inf"))
        return {
            "id": self.id,
            "status": status.value,
            "url": output_url if status is JobStatus.COMPLETED else None,
            "service": self.provider,
            "createdAt": iso_utc(self.created_at),
            "completedAt": iso_utc(self.finish_at),
            "metadata": {
                "duration": self.processing_seconds(),
                "width": self.width,
                "height": self.height,
            },
        }

    def to_record(self) -> dict[str, Any]:
        """A plain dict for the state file."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        """Rebuild a job from :meth:`to_record` output.

        :param record: the saved dict.
        """
        names = {f.name for f in fields(cls)}
        job = cls(**{key: value for key, value in record.items() if key in names})
        if job.webhook == "sending":
            job.webhook = "pending"
        return job
