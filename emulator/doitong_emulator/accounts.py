"""Emulated accounts: their configuration and their running balances and limits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from airflow_provider_doitong.client.contract import PLANS, RATE_LIMIT_WINDOW_SECONDS
from doitong_emulator.limits import DailyCounter, FixedWindow

DEFAULT_API_KEY = "emulator-key"
DEFAULT_WEBHOOK_SECRET = "emulator-webhook-secret"
DEFAULT_ACCOUNT_NAME = "default"
DEFAULT_PLAN = "pro"
DEFAULT_CREDITS = 100_000
#: A limit override meaning "no limit" (plans' ``None``).
UNLIMITED = -1


@dataclass(kw_only=True)
class EmulatorAccount:
    """One API key of the emulator and the account behind it.

    The limit overrides replace the plan's values from ``contract.PLANS``; ``None`` keeps the plan's
    (or the emulator-wide override's) value and :data:`UNLIMITED` lifts the limit.

    :param api_key: the key clients send (never logged nor shown by ``repr``).
    :param plan: a plan name from ``contract.PLANS``.
    :param credits: the starting credit balance.
    :param webhook_secret: the secret webhook deliveries are signed with.
    :param name: a label shown in stats instead of the key; defaults to ``default`` / ``account-N``.
    :param requests_per_minute: overrides the plan's requests per window.
    :param concurrent_jobs: overrides the plan's concurrent jobs.
    :param daily_limit: overrides the plan's submissions per UTC day.
    """

    api_key: str = field(repr=False)
    plan: str = DEFAULT_PLAN
    credits: int = DEFAULT_CREDITS
    webhook_secret: str = field(default=DEFAULT_WEBHOOK_SECRET, repr=False)
    name: str | None = None
    requests_per_minute: int | None = None
    concurrent_jobs: int | None = None
    daily_limit: int | None = None

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if self.plan not in PLANS:
            raise ValueError(f"unknown plan {self.plan!r}; expected one of {', '.join(PLANS)}")
        if self.credits < 0:
            raise ValueError("credits must not be negative")


@dataclass(frozen=True, kw_only=True)
class LimitOverrides:
    """Emulator-wide limit overrides, applied to accounts without their own.

    :param requests_per_minute: requests per window, or ``None`` for the plan's.
    :param concurrent_jobs: concurrent jobs, or ``None`` for the plan's.
    :param daily_limit: submissions per UTC day, ``None`` for the plan's, :data:`UNLIMITED` for none.
    """

    requests_per_minute: int | None = None
    concurrent_jobs: int | None = None
    daily_limit: int | None = None


@dataclass(frozen=True)
class Limits:
    """An account's effective limits.

    :param requests_per_minute: requests per window (or ``None`` for no limit).
    :param concurrent_jobs: jobs not yet terminal at once (or ``None`` for no limit).
    :param daily_limit: submissions per UTC day (or ``None`` for no limit).
    """

    requests_per_minute: int | None
    concurrent_jobs: int | None
    daily_limit: int | None


def _pick(*values: int | None) -> int | None:
    for value in values:
        if value is not None:
            return None if value == UNLIMITED else value
    return None


def resolve_limits(account: EmulatorAccount, overrides: LimitOverrides) -> Limits:
    """The limits an account runs with: its own overrides, then the emulator's, then its plan's.

    :param account: the account.
    :param overrides: the emulator-wide overrides.
    """
    plan = PLANS[account.plan]
    return Limits(
        requests_per_minute=_pick(
            account.requests_per_minute, overrides.requests_per_minute, plan.requests_per_minute
        ),
        concurrent_jobs=_pick(account.concurrent_jobs, overrides.concurrent_jobs, plan.concurrent_jobs),
        daily_limit=_pick(account.daily_limit, overrides.daily_limit, plan.daily_limit, UNLIMITED),
    )


@dataclass
class AccountState:
    """An account while the emulator runs: balance, windows, jobs in flight.

    :param config: the account's configuration.
    :param limits: its effective limits.
    :param time_scale: the emulator's time scale (the request window is scaled by it).
    """

    config: EmulatorAccount
    limits: Limits
    time_scale: float
    credits: int = 0
    window: FixedWindow = field(init=False)
    daily: DailyCounter = field(default_factory=DailyCounter)
    active: set[str] = field(default_factory=set)
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self.credits = self.config.credits
        limit = self.limits.requests_per_minute
        self.window = FixedWindow(
            limit=limit if limit is not None else 2**31 - 1,
            length=RATE_LIMIT_WINDOW_SECONDS * self.time_scale,
            exact=self.time_scale != 1.0,
        )

    @property
    def name(self) -> str:
        """The account's label (never its key)."""
        return self.config.name or DEFAULT_ACCOUNT_NAME

    def reset(self) -> None:
        """Restore the starting balance and forget windows, counters and jobs in flight."""
        self.credits = self.config.credits
        self.window.clear()
        self.daily = DailyCounter()
        self.active.clear()
        self.max_in_flight = 0


class KeyRotations:
    """API keys rotated while the emulator runs: a new key serves the old key's account, and the
    old key stops working at a set moment (then it is answered 401, as an unknown key would be).

    Thread-safe; the API gate consults it before any request reaches the endpoints.

    :param clock: the Unix-time clock.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._aliases: dict[str, str] = {}
        self._revoked_at: dict[str, float] = {}

    def rotate(self, *, old_key: str, new_key: str, old_key_valid_for: float = 0.0) -> None:
        """Give ``old_key``'s account ``new_key``; ``old_key`` stops working ``old_key_valid_for`` s from now.

        :raises ValueError: for an empty key or a key rotated onto itself.
        """
        if not old_key or not new_key or old_key == new_key:
            raise ValueError("a rotation needs two different, non-empty keys")
        if old_key_valid_for < 0:
            raise ValueError("old_key_valid_for must not be negative")
        with self._lock:
            account_key = self._aliases.get(old_key, old_key)
            self._aliases[new_key] = account_key
            self._revoked_at[old_key] = self._clock() + old_key_valid_for
            self._revoked_at.pop(new_key, None)

    def resolve(self, key: str | None) -> tuple[str | None, bool]:
        """The account key a presented key stands for, and whether the presented key is revoked."""
        if key is None:
            return None, False
        with self._lock:
            revoked_at = self._revoked_at.get(key)
            if revoked_at is not None and self._clock() >= revoked_at:
                return key, True
            return self._aliases.get(key, key), False

    def clear(self) -> None:
        """Forget every rotation: all original keys work again, no new key does."""
        with self._lock:
            self._aliases.clear()
            self._revoked_at.clear()
