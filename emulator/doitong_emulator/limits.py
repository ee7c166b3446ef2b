"""Rate-limit bookkeeping: the fixed request window, the daily counter and header formatting."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from airflow_provider_doitong.client.contract import (
    RATE_LIMIT_LIMIT_HEADER,
    RATE_LIMIT_REMAINING_HEADER,
    RATE_LIMIT_RESET_HEADER,
)

#: The smallest ``Retry-After`` the emulator sends, in seconds.
MIN_RETRY_AFTER = 0.01


def format_seconds(value: float, *, exact: bool) -> str:
    """Format a time value for a header.

    :param value: seconds (a duration or a Unix time).
    :param exact: ``True`` for three decimals (scaled time), ``False`` for whole seconds (rounded up).
    """
    if exact:
        return f"{math.ceil(round(value * 1000, 6)) / 1000:.3f}"
    return str(math.ceil(round(value, 6)))


def format_retry_after(seconds: float, *, exact: bool) -> str:
    """Format a ``Retry-After`` value, never below :data:`MIN_RETRY_AFTER` (or one whole second).

    :param seconds: how long the client should wait.
    :param exact: three decimals when ``True``; whole seconds otherwise.
    """
    return format_seconds(max(seconds, MIN_RETRY_AFTER), exact=exact)


@dataclass
class WindowDecision:
    """The outcome of counting one request against a fixed window.

    :param allowed: whether the request is within the limit.
    :param headers: the ``X-RateLimit-*`` headers to send.
    :param retry_after: seconds until the window resets.
    """

    allowed: bool
    headers: dict[str, str]
    retry_after: float


@dataclass
class FixedWindow:
    """A fixed window of ``length`` seconds allowing ``limit`` requests.

    A window opens at the first request after the previous one ended; its end is aligned to whole
    seconds when ``exact`` is false (unscaled time) and to milliseconds otherwise, so the
    ``X-RateLimit-Reset`` header states the end exactly.

    :param limit: requests allowed per window.
    :param length: the window's length in real seconds.
    :param exact: whether headers carry three decimals.
    """

    limit: int
    length: float
    exact: bool
    end: float = 0.0
    count: int = 0

    def _roll(self, now: float) -> None:
        if now >= self.end:
            if self.exact:
                self.end = math.ceil(round((now + self.length) * 1000, 6)) / 1000
            else:
                self.end = float(math.ceil(round(math.floor(now) + self.length, 6)))
            self.count = 0

    def hit(self, now: float) -> WindowDecision:
        """Count one request.

        :param now: the current Unix time.
        """
        self._roll(now)
        self.count += 1
        return self._decision(now, allowed=self.count <= self.limit)

    def peek(self, now: float, *, exhausted: bool = False) -> WindowDecision:
        """The headers as they stand, without counting a request.

        :param now: the current Unix time.
        :param exhausted: report no remaining requests (for an injected rate-limit fault).
        """
        self._roll(now)
        return self._decision(now, allowed=not exhausted, exhausted=exhausted)

    def _decision(self, now: float, *, allowed: bool, exhausted: bool = False) -> WindowDecision:
        remaining = 0 if exhausted else max(0, self.limit - self.count)
        headers = {
            RATE_LIMIT_LIMIT_HEADER: str(self.limit),
            RATE_LIMIT_REMAINING_HEADER: str(remaining),
            RATE_LIMIT_RESET_HEADER: format_seconds(self.end, exact=self.exact),
        }
        return WindowDecision(allowed=allowed, headers=headers, retry_after=max(self.end - now, 0.0))

    def clear(self) -> None:
        """Forget the current window."""
        self.end = 0.0
        self.count = 0


def next_utc_midnight(now: float) -> float:
    """The Unix time of the next UTC midnight after ``now``.

    :param now: a Unix time.
    """
    day = datetime.fromtimestamp(now, tz=timezone.utc).date()
    midnight = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(days=1)
    return midnight.timestamp()


@dataclass
class DailyCounter:
    """Submissions accepted during the current UTC day.

    :param day: the UTC date (ISO) the count belongs to.
    :param count: submissions accepted that day.
    """

    day: str = ""
    count: int = 0

    def current(self, now: float) -> int:
        """The count for the UTC day containing ``now``.

        :param now: a Unix time.
        """
        today = datetime.fromtimestamp(now, tz=timezone.utc).date().isoformat()
        if today != self.day:
            self.day, self.count = today, 0
        return self.count

    def add(self, now: float) -> None:
        """Count one accepted submission.

        :param now: a Unix time.
        """
        self.current(now)
        self.count += 1
