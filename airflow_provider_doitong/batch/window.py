"""The account's rate-limit window as a batch sees it: how many requests it may make now, and when more.

The ``X-RateLimit-*`` headers are the account's, shared with every DAG, worker and triggerer using
it. A batch counts its own answers in the current window; the rest of what the window has spent is
someone else's. Alone on the account, the batch spends the window as fast as its work needs (a short
batch then ends before the reset). Once anyone else spends it too, it leaves them what they are
expected to spend until the reset, and may spend the rest of what is likely left now (the last
answer's ``remaining`` less what they spent since at their pace), past a burst of one round of its
job slots: their pace is judged from how ``remaining`` fell between its own answers
over the last :data:`RECENT_S` seconds (:meth:`RequestWindow.others_pace`), and what is kept for
them is never more than the even share of the rest of the window (the requests the plan's rate
allows from now to the reset: each party keeping that much for the others is the rule "as if
alone", under which parties that start together spread a window whose work would fit in it to its
reset). A batch with a share of the job slots (a pool's) keeps for the others at least what it
spends itself, at its own pace in the window so far: the others' pace does not show a batch that
waits its turn for the window, and the share a batch starting first takes, it would keep; what ends
the whole is then the work each has left on its own slots at the reset, since no one takes over the
slots of a batch that is done. Each window is judged by itself. A request waiting for a spent window goes
:data:`~airflow_provider_doitong.client.pacing.RESET_MARGIN` after its reset.

A batch resumed after a deferral knows the window only as it was when it deferred
(:meth:`RequestWindow.snapshot`, kept in its ledger): others have spent it since, so it sends one
request to learn what is left before any other.
"""

from __future__ import annotations

import math
from collections import deque

from airflow_provider_doitong.client.pacing import RESET_MARGIN
from airflow_provider_doitong.client.ratelimit import RateLimitInfo

#: Requests of the window that others may have spent while the batch still counts as alone: the
#: task's own requests before its batch started (a balance read, a resumed task's earlier ones)
#: show as others'. At least this many, or this share of the window's limit.
OTHERS_TOLERANCE = 2
OTHERS_TOLERANCE_SHARE = 0.05
#: The shortest part of a window over which the others' pace is judged (a burst at its start is
#: not taken for their pace until the reset).
MIN_ELAPSED_S = 5.0
#: How far back the others' pace is judged (seconds).
RECENT_S = 10.0
#: A batch whose remaining work needs at most this share of what is left of a shared window spends
#: as its work needs (see :meth:`RequestWindow.available`).
FINISHING_SHARE = 0.5


class RequestWindow:
    """What the latest answers said about the window, and this batch's own part of it.

    :param requests_per_window: the plan's requests per window (``None``: not limited).
    :param window_s: the window's length in seconds.
    :param keep_own_pace: keep for the others at least the batch's own pace (see the module).
    """

    def __init__(
        self, *, requests_per_window: int | None, window_s: float, keep_own_pace: bool = False
    ) -> None:
        self.requests_per_window = requests_per_window
        self.window_s = window_s
        self.keep_own_pace = keep_own_pace
        self.rate: RateLimitInfo | None = None
        #: No request before this Unix time (the window is spent, or the API is unavailable).
        self.blocked_until = 0.0
        self._own = 0  # this batch's answers in the current window
        self._stale = False  # the window as it was before a deferral: learn it with one request
        #: When the latest answer was first judged (``None``: not yet): what the others spent since.
        self._answered_at: float | None = None
        #: (Unix time, requests others had spent in the window) when each new answer was first
        #: judged: how fast ``remaining`` fell between the batch's own requests
        self._samples: deque[tuple[float, int]] = deque(maxlen=64)

    # --- what the answers say -------------------------------------------------------------
    def saw(self, rate: RateLimitInfo | None) -> None:
        """An answer's headers (the same answer reported twice counts once).

        :param rate: what the answer said, if anything.
        """
        if rate is None or (rate == self.rate and not self._stale):
            return
        self._stale = False
        old = self.rate
        if old is not None and old.reset_at is not None and rate.reset_at is not None:
            if rate.reset_at < old.reset_at - 0.5:  # an answer from a window already over
                return
            if rate.reset_at > old.reset_at + 0.5:  # a new window
                self._own = 0
                self._samples.clear()
            elif (
                rate.remaining is not None and old.remaining is not None and rate.remaining > old.remaining
            ):  # an earlier answer of the same window, arriving late
                self._own += 1
                return
        self._own += 1
        self.rate = rate
        self._answered_at = None

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
    def available(
        self,
        now: float,
        *,
        burst: int,
        judge: bool = True,
        work_left: float | None = None,
        keep: bool = True,
    ) -> float:
        """Requests the batch may make now (``inf`` when the plan does not limit them).

        In a shared window, a batch whose remaining work needs at most :data:`FINISHING_SHARE` of
        what is left spends as its work needs: the batch closest to done goes first (the others keep
        the rest and the windows after it), where keeping the others' pace for them until the reset
        would spread a last window's work, which fits in it, to its reset.

        :param now: the Unix time.
        :param burst: requests allowed ahead of the even share when shared (one round of job slots).
        :param judge: take the latest answer into the others' pace (false: ``now`` is a time ahead).
        :param work_left: the requests the batch's remaining work needs, if it may finish first
            (``None``: it may not, as when other work holds some of its job slots).
        :param keep: keep the others' share (false: what is likely left of the window at all).
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
        if self._stale:
            return min(1, rate.remaining)
        if not self.shared:
            return rate.remaining
        remaining = self.remaining_now(now, judge=judge)
        if not keep or (work_left is not None and work_left <= FINISHING_SHARE * remaining):
            return remaining
        return max(0.0, remaining - self._kept(now, burst, judge))

    def room(self, now: float, want: int) -> int:
        """How many of ``want`` requests are likely left of the window now, the others' share not
        kept: a wave's groups never go past it, so a wave whose answers show the others spending
        the window's last requests stops (0) rather than learn it from refusals.

        :param now: the Unix time.
        :param want: the requests wanted.
        """
        room = self.available(now, burst=0, keep=False)
        return want if room >= want else int(room)

    def remaining_now(self, now: float, *, judge: bool = True) -> float:
        """What is likely left of a shared window now: the latest answer's ``remaining`` less what
        the others have spent since at their pace (:meth:`others_pace`). A batch that waited a while
        for its job slots, while the others spent the end of the window, thus waits for the reset
        instead of learning it from a refusal; after :data:`RECENT_S` seconds without an answer it
        assumes nothing of them, and its next request tells.

        :param now: the Unix time.
        :param judge: as for :meth:`available`.
        """
        assert self.rate is not None and self.rate.remaining is not None
        if self._answered_at is None:
            if not judge:
                return float(self.rate.remaining)
            self._answered_at = now
        since = max(0.0, now - self._answered_at)
        return max(0.0, self.rate.remaining - self.others_pace(now, judge=judge) * since)

    def _kept(self, now: float, burst: int, judge: bool) -> float:
        """Requests of the rest of the window kept for the others (see the module)."""
        assert self.rate is not None and self.rate.reset_at is not None and self.limit is not None
        left = min(self.window_s, max(0.0, self.rate.reset_at - now))
        even_share_left = self.limit * left / self.window_s
        pace = self.others_pace(now, judge=judge)  # the others, going on as lately
        if self.keep_own_pace:
            started = self.rate.reset_at - self.window_s
            pace = max(pace, self._own / max(MIN_ELAPSED_S, now - started))
        return max(0.0, min(even_share_left, pace * left) - burst)

    def others_pace(self, now: float, *, judge: bool = True) -> float:
        """Requests a second the others spend, as the last :data:`RECENT_S` seconds of answers
        show (from the window's start, over at least :data:`MIN_ELAPSED_S`, before there are any).

        Between two answers of its own, ``remaining`` falls by one for the batch's request and by
        whatever the others spent: their pace is what the answers of the last :data:`RECENT_S`
        seconds showed them spend. A batch that has had no answer for that long assumes nothing
        of them (its next answer tells), so one whose others have finished is not held back
        until the reset by a pace they no longer keep.
        """
        others = self.others
        if judge and (not self._samples or self._samples[-1][1] != others):
            self._samples.append((now, others))
        rate = self.rate
        since, then = (rate.reset_at - self.window_s, 0) if rate and rate.reset_at else (now, others)
        for at, spent in self._samples:  # the last sample at least RECENT_S old, if any
            if at > now - RECENT_S:
                break
            since, then = at, spent
        return max(0, others - then) / max(MIN_ELAPSED_S, now - since)

    def ready_at(
        self, now: float, need: float, *, burst: int, fallback: float, work_left: float | None = None
    ) -> float:
        """When the window allows ``need`` requests: now, when the share kept for the others lets
        them (it shrinks as the reset nears), or the reset.

        :param fallback: how long to wait when nothing says when the window resets.
        :param work_left: as for :meth:`available`.
        """
        if self.available(now, burst=burst, work_left=work_left) >= need:
            return now
        rate = self.rate
        if (
            self.shared
            and rate is not None
            and rate.remaining is not None
            and rate.reset_at is not None
            and rate.remaining >= need
            and now >= self.blocked_until
            and not self._stale
        ):
            # what is kept only shrinks as time passes: the first moment it lets ``need`` through
            low, high = now, rate.reset_at
            for _ in range(30):
                mid = (low + high) / 2
                ok = self.available(mid, burst=burst, judge=False, work_left=work_left) >= need
                low, high = (low, mid) if ok else (mid, high)
            return high
        return self.reset_at(now, fallback=fallback)

    # --- across a deferral ------------------------------------------------------------------
    def snapshot(self) -> list[float] | None:
        """What the batch knows of the current window, for its ledger: ``[limit, remaining,
        reset_at, own answers, blocked until]`` (``None`` when it knows nothing). The block is a
        refusal's for the spent window, which a resumed batch keeps to instead of sending one
        request to learn the window into it."""
        rate = self.rate
        if rate is None or rate.limit is None or rate.remaining is None or rate.reset_at is None:
            return None
        return [rate.limit, rate.remaining, rate.reset_at, self._own, self.blocked_until]

    def restore(self, value: object, *, now: float) -> None:
        """Take up a :meth:`snapshot` read back from the ledger (untrusted: anything else is ignored,
        as is a window already over); the next request learns what is left of it.

        :param value: the snapshot.
        :param now: the Unix time.
        """
        if not isinstance(value, list) or len(value) not in (4, 5):  # 4: written before the block
            return
        if not all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
        ):
            return
        limit, remaining, reset_at, own, *blocked = (float(v) for v in value)
        if not (0 <= remaining <= limit and 0 <= own <= limit and now < reset_at <= now + self.window_s):
            return
        self.rate = RateLimitInfo(
            limit=int(limit), remaining=int(remaining), reset_at=reset_at, retry_at=None
        )
        self._own, self._stale = int(own), True
        if blocked and now < blocked[0] <= reset_at + self.window_s:
            self.blocked_until = blocked[0]

    def reset_at(self, now: float, *, fallback: float) -> float:
        """When the window (or a block on every request) is over."""
        rate, blocked = self.rate, self.blocked_until
        if rate is not None and rate.reset_at is not None and rate.reset_at + RESET_MARGIN > now:
            return max(rate.reset_at + RESET_MARGIN, blocked)
        return max(blocked, now + min(fallback, self.window_s))
