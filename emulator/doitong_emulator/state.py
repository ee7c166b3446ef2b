"""The emulator's state: jobs and their clock-driven lifecycle, behind one lock.

The parts have their own modules: accounts by key and name in :mod:`~doitong_emulator.registry`,
admission (limits, credits, new jobs) in :mod:`~doitong_emulator.admission`, webhooks to send in
:mod:`~doitong_emulator.outbox`, the stats view in :mod:`~doitong_emulator.report` and the state
file in :mod:`~doitong_emulator.persistence`. This class holds the lock, the jobs and the settling.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_doitong.client.contract import REFUND_FAILED_JOBS, JobStatus
from doitong_emulator import admission, hostile_values, outputs, persistence
from doitong_emulator.accounts import AccountState, EmulatorAccount
from doitong_emulator.config import EmulatorConfig
from doitong_emulator.faults import FaultInjector
from doitong_emulator.jobs import OUTCOME_FAILED, OUTCOME_STUCK, Job, JobRequest
from doitong_emulator.limits import WindowDecision, format_retry_after
from doitong_emulator.outbox import WebhookDelivery, WebhookOutbox
from doitong_emulator.registry import AccountRegistry
from doitong_emulator.report import snapshot
from doitong_emulator.stats import Stats

__all__ = ["EmulatorConfig", "EmulatorState", "WebhookDelivery"]


class EmulatorState:
    """Everything the emulated service knows. Thread-safe: one lock guards it all.

    Job status is computed from the clock; :meth:`settle` applies the side effects of jobs that
    reached a terminal state (refunds, counters, webhook scheduling) and runs before any read.

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
        self.registry = AccountRegistry(config=config)
        self.jobs: dict[str, Job] = {}
        self._due: list[tuple[float, str]] = []
        self.outbox = WebhookOutbox()
        self._active_total = 0
        self.stats = Stats()
        self.downloads = outputs.DownloadLedger()
        self._rng = random.Random(config.seed)
        for account in accounts:
            self.add_account(account)

    # --- accounts -------------------------------------------------------------------------
    def add_account(self, account: EmulatorAccount) -> AccountState:
        """Register an account; it gets a name (``default``, ``account-2``, ...) if it has none.

        :raises ValueError: if its key or name is already taken.
        """
        with self.lock:
            return self.registry.add(account)

    @property
    def accounts(self) -> list[AccountState]:
        """The accounts in the order they were added."""
        return self.registry.accounts

    def account(self, name: str) -> AccountState:
        """An account by its name.

        :raises KeyError: if there is none.
        """
        return self.registry.by_name(name)

    def authenticate(self, api_key: str | None) -> AccountState | None:
        """The account of a key, or ``None``."""
        return self.registry.authenticate(api_key)

    def admit(self, account: AccountState) -> WindowDecision:
        """Count one authenticated request against the account's window."""
        with self.lock:
            now = self.clock()
            self._settle(now)
            return account.window.hit(now)

    def peek(self, account: AccountState, *, exhausted: bool = False) -> WindowDecision:
        """The account's rate-limit headers without counting a request.

        :param exhausted: report no remaining requests.
        """
        with self.lock:
            return account.window.peek(self.clock(), exhausted=exhausted)

    def retry_after(self, seconds: float) -> str:
        """Format a ``Retry-After`` value (real seconds) for this emulator's time scale."""
        return format_retry_after(seconds, exact=self.config.exact_times)

    # --- jobs -----------------------------------------------------------------------------
    def submit(self, account: AccountState, request: JobRequest) -> Job:
        """Create a job, or refuse it (daily limit, concurrency, credits).

        :raises ApiError: 429 ``DAILY_LIMIT`` / ``CONCURRENCY_LIMIT`` or 402 ``INSUFFICIENT_CREDITS``.
        """
        with self.lock:
            now = self.clock()
            self._settle(now)
            held = self.faults.slots_held(now)
            admission.check_limits(account, now, jobs=self.jobs, config=self.config, held=held)
            cost = admission.charge(account, request, factor=self.faults.config.charge_factor)
            job = admission.new_job(
                account=account,
                request=request,
                cost=cost,
                now=now,
                outcome=self.faults.draw_job_outcome(),
                job_id=outputs.new_job_id(self.faults.config),
                config=self.config,
                rng=self._rng,
            )
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

    def adopt(self, job: Job) -> None:
        """Take over a job loaded from a state file, with its bookkeeping (call under the lock)."""
        account = self.registry.get(job.account)
        if account is None:
            return
        self.jobs[job.id] = job
        if not job.settled:
            account.active.add(job.id)
            self._active_total += 1
            if job.finish_at is not None:
                heapq.heappush(self._due, (job.finish_at, job.id))
        elif job.webhook == "pending":
            self.outbox.push(job.id)

    def find_job(self, account: AccountState, job_id: str) -> Job | None:
        """A job of this account (another account's job is not found); counts one job read."""
        with self.lock:
            self.stats.jobs_read += 1
            self.stats.reads.append((self.clock(), job_id))
            job = self.jobs.get(job_id)
            if job is None or job.account != account.name:
                return None
            return job

    def job_json(self, job: Job, *, at_submission: bool = False) -> dict[str, Any]:
        """A job as the API shows it now (``at_submission``: as just created)."""
        shown = job.to_json(output_url=self.output_url(job), now=self.clock(), at_submission=at_submission)
        shown["creditCost"] = hostile_values.credit_cost(
            job.credit_cost, form=self.faults.config.credit_cost_as
        )
        return shown

    def output_url(self, job: Job) -> str:
        """Where a job's output is served (another host or suffix under the hostile options)."""
        return outputs.output_url(job.id, base_url=self.base_url, config=self.faults.config)

    def output_job(self, job_id: str) -> Job | None:
        """The job whose output may be downloaded now: completed and not expired."""
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
            account = self.registry.get(job.account)
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
                self.outbox.push(job_id)
        return due[0][0] if due else None

    # --- webhooks -------------------------------------------------------------------------
    def take_webhooks(self) -> list[WebhookDelivery]:
        """Prepare every pending webhook delivery and mark it as being sent."""
        with self.lock:
            return self.outbox.take(jobs=self.jobs, account_of=self.registry.get, output_url=self.output_url)

    def webhook_attempted(self, job_id: str) -> bool:
        """Count one delivery attempt; ``False`` when the job is gone (after a reset): stop."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return False
            self.stats.webhook_attempts += 1
            job.webhook_attempts += 1
            return True

    def webhook_finished(self, job_id: str, *, delivered: bool | None) -> None:
        """Record a delivery's end: ``True`` delivered, ``False`` given up, ``None`` interrupted."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is not None:
                self.outbox.finished(job, self.stats, delivered=delivered)

    def has_pending_webhooks(self) -> bool:
        """Whether deliveries wait to be taken."""
        return bool(self.outbox)

    # --- counters -------------------------------------------------------------------------
    def record_request(self, t: float, kind: str, status: int, *, form: str | None = None) -> None:
        """Count one API request (``status`` 0 when dropped; ``kind`` from ``stats.KINDS``; ``form``:
        how it was sent, the GraphQL field or ``rest``, for the log)."""
        with self.lock:
            self.stats.record_request(t, kind, status, form=form)

    def snapshot(self) -> dict[str, Any]:
        """The counters as ``GET /_emulator/stats`` shows them."""
        with self.lock:
            now = self.clock()
            self._settle(now)
            return snapshot(
                stats=self.stats,
                accounts=self.accounts,
                jobs=self.jobs,
                active_total=self._active_total,
                now=now,
            ) | {"downloads": outputs.ledger_snapshot(self.downloads)}

    def request_log(self) -> list[dict[str, Any]]:
        """Every API request as ``{"t", "kind", "status", "form"}``."""
        with self.lock:
            return self.stats.request_log()

    def read_log(self) -> list[dict[str, Any]]:
        """Every job read as ``{"t", "job"}``: which jobs each status request asked for."""
        with self.lock:
            return self.stats.read_log()

    def reset(self) -> None:
        """Forget jobs and counters, restore starting credits, restart the seeded draws."""
        with self.lock:
            self.jobs.clear()
            self._due.clear()
            self.outbox.clear()
            self._active_total = 0
            self.stats = Stats()
            self.downloads.reset()
            for account in self.accounts:
                account.reset()
            self._rng = random.Random(self.config.seed)
            self.faults.reseed()

    # --- persistence ----------------------------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        """Jobs, balances and counters as a JSON-ready dict (no keys nor secrets)."""
        with self.lock:
            return persistence.state_record(self)

    def load_record(self, record: dict[str, Any]) -> None:
        """Replace jobs, balances and counters with saved ones (from :meth:`to_record`).

        :raises ValueError: for an unknown format version.
        """
        with self.lock:
            persistence.restore_record(self, record)
