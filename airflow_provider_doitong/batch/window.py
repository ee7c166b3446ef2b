"""The account's rate-limit window as a batch sees it: how many requests it may make now, and when more.

The ``X-RateLimit-*`` headers are the account's, shared with every DAG, worker and triggerer using
it. A batch counts its own answers in the current window; the rest of what the window has spent is
someone else's. Alone on the account, the batch spends the window as fast as its work needs (a short
batch then ends before the reset). Once anyone else spends it too, it spends the window no faster
than evenly over the time left in it, past a burst of one round of its job slots, so that batches
started together do not spend it first and all wait out the reset. Each window is judged by
itself. A request waiting for a spent window goes
:data:`~airflow_provider_doitong.client.pacing.RESET_MARGIN` after its reset.
"""

from __future__ import annotations

import math

from airflow_provider_doitong.client.pacing import RESET_MARGIN
from airflow_provider_doitong.client.ratelimit import RateLimitInfo

#: Requests of the window that others may have spent while the batch still counts as alone: the
#: task's own requests before its batch started (a balance read, a resumed task's earlier ones)
#: show as others'. At least this many, or this share of the window's limit.
OTHERS_TOLERANCE = 2
OTHERS_TOLERANCE_SHARE = 0.05


class RequestWindow:
    """What the latest answers said about the window, and this batch's own part of it.

    :param requests_per_window: the plan's requests per window (``None``: not limited).
    :param window_s: the window's length in seconds.
    """

    def __init__(self, *, requests_per_window: int | None, window_s: float) -> None:
        self.requests_per_window = requests_per_window
        self.window_s = window_s
        self.rate: RateLimitInfo | None = None
        #: No request before this Unix time (the window is spent, or the API is unavailable).
        self.blocked_until = 0.0
        self._own = 0  # this batch's answers in the current window

    # --- what the answers say -------------------------------------------------------------
    def saw(self, rate: RateLimitInfo | None) -> None:
        """An answer's headers (the same answer reported twice counts once).

        :param rate: what the answer said, if anything.
        """
        if rate is None or rate == self.rate:
            return
        old = self.rate
        if old is not None and old.reset_at is not None and rate.reset_at is not None:
            if rate.reset_at < old.reset_at - 0.5:  # an answer from a window already over
                return
            if rate.reset_at > old.reset_at + 0.5:  # a new window
                self._own = 0
            elif (
                rate.remaining is not None and old.remaining is not None and rate.remaining > old.remaining
            ):  # an earlier answer of the same window, arriving late
                self._own += 1
                return
        self._own += 1
        self.rate = rate

    @property
    def limit(self) -> int | None:
        """The window's limit: the headers', else the plan's."""
        if self.rate is not None and self.rate.limit is not None:
            return self.rate.limit
        return self.requests_per_window

    @property
    def others(self) -> int:
        """Requests others spent in the current window, as far as the answers tell."""
        rate, limit = self.rate, self.limit
        if rate is None or rate.remaining is None or limit is None:
            return 0
        return max(0, limit - rate.remaining - self._own)

    @property
    def shared(self) -> bool:
        """Whether others spend the current window too.

        Each window is judged by itself: work that shared the last one may be over (the batch's
        last window, its items left alone, is then as fast as its job slots allow).
        """
        limit = self.limit or 0
        return self.others > max(OTHERS_TOLERANCE, OTHERS_TOLERANCE_SHARE * limit)

    # --- what the batch may spend ---------------------------------------------------------
    def available(self, now: float, *, burst: int) -> float:
        """Requests the batch may make now (``inf`` when the plan does not limit them).

        :param now: the Unix time.
        :param burst: requests allowed ahead of the even share when shared (one round of job slots).
        """
        if now < self.blocked_until:
            return 0
        limit, rate = self.limit, self.rate
        if limit is None:
            return math.inf
        if (
            rate is None
            or rate.remaining is None
            or rate.reset_at is None
            or now >= rate.reset_at + RESET_MARGIN
        ):
            return limit
        if now >= rate.reset_at:  # the reset, as the API may not have seen it yet
            return 0
        if not self.shared:
            return rate.remaining
        even_share_left = limit * min(1.0, (rate.reset_at - now) / self.window_s)
        return max(0.0, rate.remaining - max(0.0, even_share_left - burst))

    def ready_at(self, now: float, need: float, *, burst: int, fallback: float) -> float:
        """When the window allows ``need`` requests: now, when the even share lets them, or the reset.

        :param fallback: how long to wait when nothing says when the window resets.
        """
        if self.available(now, burst=burst) >= need:
            return now
        rate, limit = self.rate, self.limit
        if (
            self.shared
            and limit
            and rate is not None
            and rate.remaining is not None
            and rate.reset_at is not None
            and rate.remaining >= need
            and now >= self.blocked_until
        ):
            share_left = (rate.remaining - need + burst) / limit
            return max(now, rate.reset_at - share_left * self.window_s)
        return self.reset_at(now, fallback=fallback)

    def reset_at(self, now: float, *, fallback: float) -> float:
        """When the window (or a block on every request) is over."""
        rate, blocked = self.rate, self.blocked_until
        if rate is not None and rate.reset_at is not None and rate.reset_at + RESET_MARGIN > now:
            return max(rate.reset_at + RESET_MARGIN, blocked)
        return max(blocked, now + min(fallback, self.window_s))
