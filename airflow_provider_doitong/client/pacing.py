"""When the next status read happens: the one schedule of the sync wait, the triggerer's poller and a batch.

``poll_interval`` means the same everywhere: the **longest gap** between two status reads, so a job's
end is seen at most that long after it happens. Three things move a read:

- *earlier*, when a job is worth a look: just after its expected end (:data:`DUE_MARGIN` after its
  start plus the recent median job duration; one read for the jobs due together, within a share
  of the typical duration of the first of them: :data:`POLL_FRACTION` for a wave,
  :data:`DUE_GROUP_FRACTION` for a caller that refills each job's slot as it frees), or, for a job
  whose end cannot be predicted yet, after a tenth of its age (:data:`POLL_FRACTION`, at least
  :data:`YOUNG_JOB_GAP` apart); a job seen running past its expected end is read again after a
  twentieth of the typical duration (:data:`OVERDUE_FRACTION`), or a tenth of its age if longer;
- *later*, when the plan's rate limit needs it: the requests left in the window are spread over the
  time left in it (:meth:`RateLimitInfo.pace_delay`); the triggerer's poller keeps to its share of
  the window (:func:`status_budget`), which delays the first read of jobs after their expected end
  by one typical duration at most;
- *never sooner* than :data:`MIN_POLL_GAP` after the last read, whatever interval was asked for
  (a quarter of the typical duration of jobs shorter than a second, whose due reads come
  :data:`DUE_MARGIN_FRACTION` of it after their expected end).

The sync wait knows neither the job's age nor any durations, so it reads every ``poll_interval``
(paced); the shared poller and the batch planner pass their jobs' starts and what they learned. A
batch's jobs share one model and size, so once their durations are learned the planner reads only
at expected ends (``predicted_cap=False``): no read every ``poll_interval`` while nothing is due.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from airflow_provider_doitong.client.contract import RATE_LIMIT_WINDOW_SECONDS
from airflow_provider_doitong.client.ratelimit import RateLimitInfo

#: The shortest gap between two status reads of one caller, whatever is due or asked for (jobs
#: of a known duration shorter than four times this: a quarter of it).
MIN_POLL_GAP = 0.25
#: The shortest gap between two reads of jobs whose end cannot be predicted yet (nor more than
#: ``poll_interval``). From 15 s of age the gap is a tenth of it: shorter jobs' first end is seen
#: within 1.5 s, longer ones' within a tenth of their duration, as before any of them ends nothing
#: tells which.
YOUNG_JOB_GAP = 1.5
#: Share of a job's age (while its end cannot be predicted) allowed between two reads of it.
POLL_FRACTION = 0.1
#: ... and never below this, however short the jobs.
MIN_SHORT_JOB_GAP = 0.05
#: How long after a job's expected end the read that checks it comes (at most; see
#: :data:`DUE_MARGIN_FRACTION`).
DUE_MARGIN = 0.05
#: ... and at most this share of the typical duration, so that short jobs' slots do not idle.
DUE_MARGIN_FRACTION = 0.01
#: Jobs due within this much of the first due one (and within a tenth of the typical duration) are
#: checked by one read, after the last of them.
DUE_WINDOW = 2.0
#: Jobs due within this share of the typical duration after the first one due are read together
#: when each freed job slot is refilled at once (a batch with items still to submit).
DUE_GROUP_FRACTION = 0.02
#: Share of the typical duration after which a job seen running past its expected end is read again.
OVERDUE_FRACTION = 0.05
#: How many recent job durations a caller keeps to expect the next ends.
DURATION_SAMPLES = 50
#: How long after a spent window's reset the next request goes: a request at the reset itself may
#: reach the API a moment before its window rolls over, and be refused.
RESET_MARGIN = 0.1
#: Share of the rate-limit window the triggerer's status polls may use: the rest of the even share
#: of the rest of the window is kept for submissions from workers on the same account (see
#: :func:`status_budget`).
STATUS_SHARE = 0.5


def _wave_end(wanted: list[float], typical_duration: float | None, group: float) -> float | None:
    """The last read time within the window of the first one: one read for the jobs due together."""
    if not wanted:
        return None
    first = min(wanted)
    window = DUE_WINDOW if typical_duration is None else min(DUE_WINDOW, group * typical_duration)
    return max(w for w in wanted if w <= first + window)


def due_wave_end(
    started: Iterable[float],
    *,
    typical_duration: float,
    last_read_at: float,
    group: float = POLL_FRACTION,
) -> float | None:
    """When to read the next jobs expected to end, or ``None`` if none is expected after the last read.

    A job is expected to end ``typical_duration`` after its start; the read comes :data:`DUE_MARGIN` (or less, for short jobs)
    after the last of the jobs due within ``min(DUE_WINDOW, group * typical_duration)`` of the first
    one still ahead of ``last_read_at``, so one read sees them all.

    :param started: the Unix time each pending job started.
    :param typical_duration: the recent median job duration.
    :param last_read_at: the Unix time of the last read.
    :param group: the share of ``typical_duration`` within which jobs due are read together.
    """
    margin = _due_margin(typical_duration)
    due = [s + typical_duration + margin for s in started if s + typical_duration > last_read_at]
    return _wave_end(due, typical_duration, group)


def next_read_at(
    *,
    last_read_at: float,
    poll_interval: float,
    started: Iterable[float] = (),
    typical_duration: float | None = None,
    min_gap: float = 0.0,
    group: float = POLL_FRACTION,
    predicted_cap: bool = True,
) -> float:
    """The Unix time of the next status read (see the module's docstring for the rule).

    :param last_read_at: the Unix time of the last read (or of the decision, for the sync wait).
    :param poll_interval: the longest gap, already stretched by rate-limit pacing if any.
    :param started: the Unix time each pending job started (none: read every ``poll_interval``).
    :param typical_duration: the recent median job duration, once any job has ended.
    :param min_gap: the caller's own shortest gap; never below :data:`MIN_POLL_GAP` (a quarter of
        jobs shorter than four times it).
    :param group: the share of ``typical_duration`` within which jobs due are read together.
    :param predicted_cap: keep to ``poll_interval`` even while every job's end is predicted (false:
        the read waits for the next expected end, for jobs of one kind whose durations agree).
    """
    last = last_read_at
    young_gap = min(YOUNG_JOB_GAP, poll_interval)
    floor = _read_floor(typical_duration)
    wanted: list[float] = []
    for start in started:
        if typical_duration is not None and start + typical_duration > last:
            wanted.append(start + typical_duration + _due_margin(typical_duration))
            continue
        base = max(last, start)
        gap = POLL_FRACTION * (base - start)
        if typical_duration is None:
            gap = max(young_gap, gap)
        else:  # past its expected end: it should end any moment
            gap = max(floor, OVERDUE_FRACTION * typical_duration, gap)
        wanted.append(base + min(poll_interval, gap))
    wave = _wave_end(wanted, typical_duration, group)
    if wave is None:
        latest = last + poll_interval
    elif predicted_cap or typical_duration is None:
        latest = min(wave, last + poll_interval)
    else:
        latest = wave
    return max(latest, last + max(floor, min_gap))


def _read_floor(typical_duration: float | None) -> float:
    """The shortest gap between two reads: :data:`MIN_POLL_GAP`, or a quarter of a shorter job."""
    if typical_duration is None:
        return MIN_POLL_GAP
    return max(MIN_SHORT_JOB_GAP, min(MIN_POLL_GAP, typical_duration / 4))


def _due_margin(typical_duration: float) -> float:
    """How long after a job's expected end its read comes (see :data:`DUE_MARGIN_FRACTION`)."""
    return min(DUE_MARGIN, DUE_MARGIN_FRACTION * max(typical_duration, 0.0))


def status_budget(rate_limit: RateLimitInfo, *, now: float | None = None) -> int:
    """How many of the window's remaining requests the triggerer's status polls may still use.

    The rate-limit headers are account-wide, so every poller (one per connection per triggerer)
    reads the same ``remaining``. Each keeps for the submissions of workers on the same account
    ``1 - STATUS_SHARE`` of the even share of the rest of the window (the requests the plan's rate
    allows from ``now`` to the reset): a reserve that holds however many triggerers poll (once the
    window is down to it, all of them wait; a share of what *remains* does not hold: two pollers
    each taking half of it use it all), and that shrinks as the reset nears, so the polls never
    stop for the rest of a window the submissions have spent half of (a fixed reserve of half the
    window's *limit* did: the jobs that ended meanwhile, whose slots and results the submitters
    wait for, were seen only after the reset).

    :param rate_limit: the last answer's headers, with ``remaining`` known.
    :param now: the Unix time (``None``, or no reset known: the whole window is ahead).
    """
    remaining = rate_limit.remaining or 0
    if rate_limit.limit is None:
        return int(remaining * STATUS_SHARE)
    ahead = 1.0
    if now is not None and rate_limit.reset_at is not None:
        ahead = min(1.0, max(0.0, rate_limit.reset_at - now) / RATE_LIMIT_WINDOW_SECONDS)
    return max(0, remaining - math.ceil(rate_limit.limit * (1 - STATUS_SHARE) * ahead - 1e-9))


def status_budget_opens_at(rate_limit: RateLimitInfo) -> float | None:
    """When a spent :func:`status_budget` allows a read again, with ``remaining`` as it stands: the
    reserve kept for submissions shrinks as the reset nears, below what is left some time before it
    (the reset itself when nothing is left). ``None`` when the headers name no reset.

    :param rate_limit: the last answer's headers.
    """
    if rate_limit.reset_at is None:
        return None
    remaining = rate_limit.remaining or 0
    if not rate_limit.limit or remaining <= 1:  # no limit said (or a hostile 0): no reserve to shrink
        return rate_limit.reset_at
    reserve_per_second = rate_limit.limit * (1 - STATUS_SHARE) / RATE_LIMIT_WINDOW_SECONDS
    return rate_limit.reset_at - (remaining - 1) / reserve_per_second


def next_read_delay(
    *,
    now: float,
    last_read_at: float,
    poll_interval: float,
    started: Iterable[float] = (),
    typical_duration: float | None = None,
    rate_limit: RateLimitInfo | None = None,
    status_share: bool = False,
) -> float:
    """Seconds from ``now`` to the next status read: :func:`next_read_at`, paced by the plan's rate limit.

    With rate-limit headers, ``poll_interval`` is stretched to spread the window's remaining
    requests over the time left in it, and early reads are spaced at least as far apart.

    :param now: the current Unix time.
    :param rate_limit: the last answer's rate-limit headers, if any.
    :param status_share: pace on :func:`status_budget`'s share of the window (the triggerer's
        poller), not all of it.
    """
    interval, gap = poll_interval, MIN_POLL_GAP
    share_only = False  # the share, not the window, holds the read back
    if rate_limit is not None and rate_limit.remaining is not None:
        share_only = status_share and rate_limit.remaining > 0
        opens_at = rate_limit.reset_at  # when a spent window (or share of it) allows a read again
        if status_share:
            budget = status_budget(rate_limit, now=now)
            if budget <= 0:
                opens_at = status_budget_opens_at(rate_limit)
            rate_limit = dataclasses.replace(rate_limit, remaining=budget)
        interval = rate_limit.pace_delay(now=now, min_interval=poll_interval)
        gap = rate_limit.pace_delay(now=now, min_interval=MIN_POLL_GAP)
        if (rate_limit.remaining or 0) <= 0 and opens_at is not None and opens_at > now:
            if opens_at == rate_limit.reset_at:  # the window itself: after its reset
                gap = interval = max(interval, opens_at - now + RESET_MARGIN)
            else:  # the status share: once the reserve for submissions is below what is left
                gap = interval = opens_at - now
    at = next_read_at(
        last_read_at=last_read_at,
        poll_interval=interval,
        started=started,
        typical_duration=typical_duration,
        min_gap=min(gap, interval),
    )
    due = (
        None
        if typical_duration is None
        else due_wave_end(started, typical_duration=typical_duration, last_read_at=last_read_at)
    )
    if share_only and due is not None and typical_duration is not None:
        # the share delays the first read of jobs after their expected end by one of their durations
        # at most (their ends are seen within twice it, however fast the workers spend the window);
        # jobs seen running past it, or whose end is not predicted, wait for the share
        at = min(at, due + max(MIN_POLL_GAP, typical_duration))
    return max(0.0, at - now)
