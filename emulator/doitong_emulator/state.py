"""The emulator's state: accounts, jobs, their clock-driven lifecycle, limits and counters."""

from __future__ import annotations

import heapq
import json
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_doitong.contract import (
    JOB_FAILED_ERROR_CODE,
    OUTPUT_URL_TTL_SECONDS,
    RATE_LIMIT_WINDOW_SECONDS,
    REFUND_FAILED_JOBS,
    RETRY_AFTER_HEADER,
    ErrorCode,
    JobStatus,
    credit_cost,
)
from airflow_provider_doitong.webhooks import sign_payload
from doitong_emulator.accounts import (
    AccountState,
    EmulatorAccount,
    LimitOverrides,
    resolve_limits,
)
from doitong_emulator.errors import ApiError
from doitong_emulator.faults import FaultInjector
from doitong_emulator.jobs import (
    OUTCOME_FAILED,
    OUTCOME_STUCK,
    Job,
    JobRequest,
    iso_utc,
)
from doitong_emulator.limits import (
    WindowDecision,
    format_retry_after,
    next_utc_midnight,
)
from doitong_emulator.stats import KINDS, Stats

log = logging.getLogger(__name__)

STATE_FORMAT_VERSION = 1


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


@dataclass(frozen=True)
class WebhookDelivery:
    """One prepared webhook POST.

    :param job_id: the job it reports.
    :param url: where to POST.
    :param body: the raw JSON body.
    :param headers: the headers, including the signature.
    """

    job_id: str
    url: str
    body: bytes
    headers: dict[str, str]


class EmulatorState:
    """Everything the emulated service knows. Thread-safe: one lock guards it all.

    Job status is computed from the clock; :meth:`settle` applies the side effects of jobs that
    reached a terminal state (refunds, counters, webhook scheduling) and runs before any read.

    :param config: timing and limit configuration.
    :param accounts: the accounts (at least one).
    :param faults: the fault injector (for job outcomes).
    :param clock: the Unix-time clock.
    """

    def __init__(
        self,
        *,
        config: EmulatorConfig,
        accounts: Sequence[EmulatorAccount],
        faults: FaultInjector,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.faults = faults
        self.clock = clock
        self.lock = threading.RLock()
        self.base_url = ""
        self.on_new_job: Callable[[], None] | None = None
        self._by_key: dict[str, AccountState] = {}
        self._by_name: dict[str, AccountState] = {}
        self.jobs: dict[str, Job] = {}
        self._due: list[tuple[float, str]] = []
        self._webhooks: deque[str] = deque()
        self._active_total = 0
        self.stats = Stats()
        self._rng = random.Random(config.seed)
        for account in accounts:
            self.add_account(account)

    # --- accounts -------------------------------------------------------------------------
    def add_account(self, account: EmulatorAccount) -> AccountState:
        """Register an account; it gets a name (``default``, ``account-2``, ...) if it has none.

        :param account: the account.
        :raises ValueError: if its key or name is already taken.
        """
        with self.lock:
            if account.name is None:
                account.name = "default" if not self._by_name else f"account-{len(self._by_name) + 1}"
            if account.api_key in self._by_key:
                raise ValueError(f"an account with this API key already exists ({account.name})")
            if account.name in self._by_name:
                raise ValueError(f"an account named {account.name!r} already exists")
            state = AccountState(
                config=account,
                limits=resolve_limits(account, self.config.limits),
                time_scale=self.config.time_scale,
            )
            self._by_key[account.api_key] = state
            self._by_name[account.name] = state
            return state

    @property
    def accounts(self) -> list[AccountState]:
        """The accounts in the order they were added."""
        return list(self._by_name.values())

    def account(self, name: str) -> AccountState:
        """An account by its name.

        :param name: the account's label.
        :raises KeyError: if there is none.
        """
        return self._by_name[name]

    def authenticate(self, api_key: str | None) -> AccountState | None:
        """The account of a key, or ``None``.

        :param api_key: the key the client sent.
        """
        if not api_key:
            return None
        return self._by_key.get(api_key)

    def admit(self, account: AccountState) -> WindowDecision:
        """Count one authenticated request against the account's window.

        :param account: the caller's account.
        """
        with self.lock:
            now = self.clock()
            self._settle(now)
            return account.window.hit(now)

    def peek(self, account: AccountState, *, exhausted: bool = False) -> WindowDecision:
        """The account's rate-limit headers without counting a request.

        :param account: the account.
        :param exhausted: report no remaining requests.
        """
        with self.lock:
            return account.window.peek(self.clock(), exhausted=exhausted)

    def retry_after(self, seconds: float) -> str:
        """Format a ``Retry-After`` value for this emulator's time scale.

        :param seconds: how long to wait, in real seconds.
        """
        return format_retry_after(seconds, exact=self.config.exact_times)

    # --- jobs -----------------------------------------------------------------------------
    def submit(self, account: AccountState, request: JobRequest) -> Job:
        """Create a job, or refuse it (daily limit, concurrency, credits).

        :param account: the submitting account.
        :param request: the validated submission.
        :raises ApiError: 429 ``DAILY_LIMIT`` / ``CONCURRENCY_LIMIT`` or 402 ``INSUFFICIENT_CREDITS``.
        """
        with self.lock:
            now = self.clock()
            self._settle(now)
            self._check_limits(account, now)
            cost = credit_cost(
                provider=request.provider, width=request.width, height=request.height, quality=request.quality
            )
            if account.credits < cost:
                raise ApiError(
                    ErrorCode.INSUFFICIENT_CREDITS,
                    "Insufficient credits for this operation",
                    creditsRequired=cost,
                    creditsAvailable=account.credits,
                )
            job = self._new_job(account, request, cost, now)
            account.credits -= cost
            account.daily.add(now)
            account.active.add(job.id)
            account.max_in_flight = max(account.max_in_flight, len(account.active))
            self._active_total += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self._active_total)
            self.stats.jobs_total += 1
            self.stats.submissions_by_prompt[request.prompt] += 1
            if job.outcome == OUTCOME_STUCK:
                self.stats.jobs_stuck += 1
            self.jobs[job.id] = job
            if job.finish_at is not None:
                heapq.heappush(self._due, (job.finish_at, job.id))
        if self.on_new_job is not None:
            self.on_new_job()
        return job

    def _check_limits(self, account: AccountState, now: float) -> None:
        limits = account.limits
        if limits.daily_limit is not None and account.daily.current(now) >= limits.daily_limit:
            reset_at = next_utc_midnight(now)
            raise ApiError(
                ErrorCode.DAILY_LIMIT,
                f"Daily limit of {limits.daily_limit} submissions reached; it resets at {iso_utc(reset_at)}",
                headers={RETRY_AFTER_HEADER: self.retry_after(reset_at - now)},
                dailyLimit=limits.daily_limit,
                resetAt=iso_utc(reset_at),
            )
        if limits.concurrent_jobs is not None and len(account.active) >= limits.concurrent_jobs:
            finishes = [
                self.jobs[job_id].finish_at
                for job_id in account.active
                if self.jobs[job_id].finish_at is not None
            ]
            wait = (
                min(finishes) - now  # type: ignore[type-var,operator]
                if finishes
                else RATE_LIMIT_WINDOW_SECONDS * self.config.time_scale
            )
            retry_after = self.retry_after(wait)
            raise ApiError(
                ErrorCode.CONCURRENCY_LIMIT,
                f"{len(account.active)} jobs are still running; the plan allows {limits.concurrent_jobs} "
                "at once",
                headers={RETRY_AFTER_HEADER: retry_after},
                concurrentJobs=limits.concurrent_jobs,
                retryAfter=float(retry_after),
            )

    def _new_job(self, account: AccountState, request: JobRequest, cost: int, now: float) -> Job:
        config = self.config
        outcome = self.faults.draw_job_outcome()
        seconds = config.job_seconds
        if config.job_seconds_spread:
            seconds += self._rng.uniform(-config.job_seconds_spread, config.job_seconds_spread)
        started = now + config.queue_seconds * config.time_scale
        finish = None if outcome == OUTCOME_STUCK else started + max(seconds, 0.0) * config.time_scale
        job = Job(
            id=uuid.uuid4().hex[:20],
            account=account.name,
            provider=request.provider,
            prompt=request.prompt,
            width=request.width,
            height=request.height,
            quality=request.quality,
            webhook_url=request.webhook_url,
            credit_cost=cost,
            created_at=now,
            started_at=started,
            finish_at=finish,
            outcome=outcome,
        )
        if outcome == OUTCOME_FAILED:
            job.error_code = JOB_FAILED_ERROR_CODE
            job.error_message = "The model failed to generate an image"
        return job

    def find_job(self, account: AccountState, job_id: str) -> Job | None:
        """A job of this account (another account's job is not found); counts one job read.

        :param account: the caller's account.
        :param job_id: the job id.
        """
        with self.lock:
            self.stats.jobs_read += 1
            job = self.jobs.get(job_id)
            if job is None or job.account != account.name:
                return None
            return job

    def job_json(self, job: Job, *, at_submission: bool = False) -> dict[str, Any]:
        """A job as the API shows it now.

        :param job: the job.
        :param at_submission: show it as just created.
        """
        return job.to_json(base_url=self.base_url, now=self.clock(), at_submission=at_submission)

    def output_job(self, job_id: str) -> Job | None:
        """The job whose output may be downloaded now: completed and not expired.

        :param job_id: the job id.
        """
        with self.lock:
            job = self.jobs.get(job_id)
            now = self.clock()
            if job is None or job.status(now) is not JobStatus.COMPLETED:
                return None
            ttl = self.config.output_ttl_seconds
            if ttl is not None and job.finish_at is not None and now > job.finish_at + ttl:
                return None
            return job

    def settle(self) -> float | None:
        """Apply the terminal transitions that are due; return when the next one is due."""
        with self.lock:
            return self._settle(self.clock())

    def _settle(self, now: float) -> float | None:
        due = self._due
        while due and due[0][0] <= now:
            _, job_id = heapq.heappop(due)
            job = self.jobs.get(job_id)
            if job is None or job.settled:
                continue
            job.settled = True
            account = self._by_name.get(job.account)
            if account is not None and job_id in account.active:
                account.active.discard(job_id)
                self._active_total -= 1
            if job.outcome == OUTCOME_FAILED:
                self.stats.jobs_failed += 1
                if REFUND_FAILED_JOBS and account is not None:
                    account.credits += job.credit_cost
                    job.refunded = True
            else:
                self.stats.jobs_completed += 1
            if job.webhook_url:
                job.webhook = "pending"
                self._webhooks.append(job_id)
        return due[0][0] if due else None

    # --- webhooks -------------------------------------------------------------------------
    def take_webhooks(self) -> list[WebhookDelivery]:
        """Prepare every pending webhook delivery and mark it as being sent."""
        with self.lock:
            deliveries = []
            while self._webhooks:
                job = self.jobs.get(self._webhooks.popleft())
                if job is None or job.webhook != "pending" or not job.webhook_url:
                    continue
                account = self._by_name.get(job.account)
                if account is None:
                    continue
                body = json.dumps(job.webhook_payload(base_url=self.base_url), separators=(",", ":")).encode()
                headers = {
                    "Content-Type": "application/json",
                    "User-Agent": "doitong-emulator",
                    "X-Doitong-Signature": sign_payload(body, account.config.webhook_secret),
                }
                job.webhook = "sending"
                deliveries.append(WebhookDelivery(job.id, job.webhook_url, body, headers))
            return deliveries

    def webhook_attempted(self, job_id: str) -> bool:
        """Count one delivery attempt.

        :param job_id: the job.
        :return: ``False`` when the job is gone (after a reset): the delivery should stop.
        """
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return False
            self.stats.webhook_attempts += 1
            job.webhook_attempts += 1
            return True

    def webhook_finished(self, job_id: str, *, delivered: bool | None) -> None:
        """Record a delivery's end.

        :param job_id: the job.
        :param delivered: ``True`` delivered, ``False`` given up, ``None`` interrupted (retry later).
        """
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return
            if delivered is None:
                job.webhook = "pending"
                self._webhooks.append(job_id)
            elif delivered:
                job.webhook = "delivered"
                self.stats.webhooks_delivered += 1
            else:
                job.webhook = "failed"
                self.stats.webhooks_failed += 1

    def has_pending_webhooks(self) -> bool:
        """Whether deliveries wait to be taken."""
        return bool(self._webhooks)

    # --- counters -------------------------------------------------------------------------
    def record_request(self, t: float, kind: str, status: int, *, form: str | None = None) -> None:
        """Count one API request.

        :param t: its arrival time.
        :param kind: its kind (see :data:`~doitong_emulator.stats.KINDS`).
        :param status: the HTTP status answered (0 when dropped).
        :param form: how it was sent (the GraphQL field, or ``rest``), for the log.
        """
        with self.lock:
            self.stats.record_request(t, kind, status, form=form)

    def snapshot(self) -> dict[str, Any]:
        """The counters as ``GET /_emulator/stats`` shows them."""
        with self.lock:
            now = self.clock()
            self._settle(now)
            stats = self.stats
            accounts = self.accounts
            running = sum(1 for job in self.jobs.values() if not job.status(now).is_terminal)
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
                    "overall": self._active_total,
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

    def request_log(self) -> list[dict[str, Any]]:
        """Every API request as ``{"t", "kind", "status", "form"}``."""
        with self.lock:
            return self.stats.request_log()

    def reset(self) -> None:
        """Forget jobs and counters, restore starting credits, restart the seeded draws."""
        with self.lock:
            self.jobs.clear()
            self._due.clear()
            self._webhooks.clear()
            self._active_total = 0
            self.stats = Stats()
            for account in self.accounts:
                account.reset()
            self._rng = random.Random(self.config.seed)
            self.faults.reseed()

    # --- persistence ----------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """Jobs, balances and counters as a JSON-ready dict (no keys nor secrets)."""
        with self.lock:
            return {
                "version": STATE_FORMAT_VERSION,
                "saved_at": self.clock(),
                "accounts": {
                    a.name: {
                        "credits": a.credits,
                        "daily_day": a.daily.day,
                        "daily_count": a.daily.count,
                        "max_in_flight": a.max_in_flight,
                    }
                    for a in self.accounts
                },
                "jobs": [job.to_record() for job in self.jobs.values()],
                "stats": self.stats.to_record(),
            }

    def load_record(self, record: dict[str, Any]) -> None:
        """Replace jobs, balances and counters with saved ones; accounts are matched by name.

        :param record: a dict from :meth:`to_record`.
        :raises ValueError: for an unknown format version.
        """
        if record.get("version") != STATE_FORMAT_VERSION:
            raise ValueError(f"unsupported state format {record.get('version')!r}")
        with self.lock:
            self.reset()
            for name, saved in record.get("accounts", {}).items():
                account = self._by_name.get(name)
                if account is None:
                    log.warning("The saved state names an account %s that is not configured", name)
                    continue
                account.credits = int(saved["credits"])
                account.daily.day = str(saved.get("daily_day", ""))
                account.daily.count = int(saved.get("daily_count", 0))
                account.max_in_flight = int(saved.get("max_in_flight", 0))
            for item in record.get("jobs", []):
                job = Job.from_record(item)
                account = self._by_name.get(job.account)
                if account is None:
                    continue
                self.jobs[job.id] = job
                if not job.settled:
                    account.active.add(job.id)
                    self._active_total += 1
                    if job.finish_at is not None:
                        heapq.heappush(self._due, (job.finish_at, job.id))
                elif job.webhook == "pending":
                    self._webhooks.append(job.id)
            self.stats = Stats.from_record(record.get("stats", {}))
