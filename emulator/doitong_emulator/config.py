"""How the emulated service behaves in time: :class:`EmulatorConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from airflow_provider_doitong.client.contract import OUTPUT_URL_TTL_SECONDS
from doitong_emulator.accounts import LimitOverrides


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    """How the emulated service behaves in time.

    :param time_scale: multiplies every emulated duration (jobs, queueing, the rate-limit window,
        webhook backoff); ``0.01`` runs a 20 s job in 0.2 s.
    :param job_seconds: emulated processing time of a job.
    :param job_seconds_spread: each job's processing time is drawn uniformly from
        ``job_seconds ± job_seconds_spread`` (never below zero).
    :param queue_seconds: emulated time a new job stays ``queued`` before ``processing``.
    :param seed: seeds the processing-time draws.
    :param limits: emulator-wide limit overrides.
    :param output_ttl_seconds: real seconds a completed output stays downloadable (``None``: forever).
    :param webhook_attempts: delivery attempts per webhook.
    :param webhook_backoff_s: emulated seconds before the first retry; doubled for each next one.
    :param webhook_timeout_s: real seconds one delivery attempt may take.
    """

    time_scale: float = 1.0
    job_seconds: float = 20.0
    job_seconds_spread: float = 0.0
    queue_seconds: float = 0.0
    seed: int | None = None
    limits: LimitOverrides = field(default_factory=LimitOverrides)
    output_ttl_seconds: float | None = OUTPUT_URL_TTL_SECONDS
    webhook_attempts: int = 4
    webhook_backoff_s: float = 1.0
    webhook_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.time_scale <= 0:
            raise ValueError("time_scale must be positive")
        if min(self.job_seconds, self.job_seconds_spread, self.queue_seconds) < 0:
            raise ValueError("job_seconds, job_seconds_spread and queue_seconds must not be negative")
        if self.webhook_attempts < 1:
            raise ValueError("webhook_attempts must be at least 1")

    @property
    def exact_times(self) -> bool:
        """Whether time headers carry three decimals (any scale but 1)."""
        return self.time_scale != 1.0
