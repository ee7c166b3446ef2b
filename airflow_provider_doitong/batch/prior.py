"""What a batch's jobs took, carried from one run of a task to its next: a duration prior.

A scheduled batch (a nightly prompt batch) runs the same task with the same model and size every
day, and its jobs take about as long as yesterday's. Until one of its own jobs ends, a batch cannot
predict their ends and reads them at intervals growing with their age (see
:mod:`~airflow_provider_doitong.client.pacing`); with the earlier run's durations it reads the
first wave just after its expected end instead.

:func:`summarize` makes the compact summary a finished batch puts in its result (the task's XCom
value): a few quantiles of the durations it saw and the model, size and quality they are for,
nothing else. :func:`read_prior` reads such a value back, as untrusted input: anything that is not a
summary of this batch's kind of job, in bounds and in order, is ignored. :class:`SeededPlanner`
seeds the planner with it; until the batch's own ends outnumber the seeds, a read still comes at
most ``poll_interval`` after the jobs were last known, so a prior longer than today's jobs costs at
most that, and one shorter is corrected by the overdue reads.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from airflow_provider_doitong.batch.item_list import ItemList
from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.ledger import Ledger
from airflow_provider_doitong.batch.planner import Planner
from airflow_provider_doitong.client.pacing import YOUNG_JOB_GAP

#: The key of the summary in the batch's result.
SUMMARY_KEY = "job_durations"
#: The summary's format; a value of another format is ignored.
FORMAT = 1
#: The quantiles kept, in order (``p50`` is the median).
QUANTILES = ("p10", "p25", "p50", "p75", "p90")
#: The longest job duration a prior may hold, in seconds; a longer one is not believed.
MAX_SECONDS = 6 * 3600.0
#: Fewer completed jobs than this make no summary (their quantiles would say little).
MIN_JOBS = 3

Kind = tuple[str, int, int, str]


def kind_of(items: Iterable[BatchItem]) -> Kind | None:
    """The one ``(model, width, height, quality)`` of ``items``, or ``None`` when they differ (or none).

    An :class:`~.item_list.ItemList` says without building its items (a million of them).
    """
    if isinstance(items, ItemList):
        kinds = items.kinds()
        return kinds.pop() if len(kinds) == 1 else None
    found: Kind | None = None
    for item in items:
        request = item.request
        this = (request.provider, int(request.width), int(request.height), request.quality)
        if found is None:
            found = this
        elif this != found:
            return None
    return found


def summarize(ledger: Ledger, items: Sequence[BatchItem]) -> dict[str, Any] | None:
    """The summary of the job durations the batch saw (its jobs of one kind), or ``None``.

    Images copied from the image cache and jobs the API gave no duration for are left out; a batch
    whose items are of several kinds, or with fewer than :data:`MIN_JOBS` durations, has none.
    """
    durations = sorted(
        float(r.duration)
        for r in ledger
        if r.duration is not None and not r.from_cache and _plausible(r.duration)
    )
    if len(durations) < MIN_JOBS:
        return None
    kind = kind_of(items)
    if kind is None:
        return None
    cuts = statistics.quantiles(durations, n=20, method="inclusive")  # every 5%
    values = (cuts[1], cuts[4], statistics.median(durations), cuts[14], cuts[17])
    model, width, height, quality = kind
    return {
        "format": FORMAT,
        "model": model,
        "width": width,
        "height": height,
        "quality": quality,
        "jobs": len(durations),
        **{name: round(value, 3) for name, value in zip(QUANTILES, values, strict=True)},
    }


def read_prior(value: Any, *, kind: Kind | None) -> tuple[list[float] | None, str]:
    """The seed durations in an earlier run's result ``value``, or ``None`` and why not.

    :param value: the earlier run's XCom value (anything: it is not trusted).
    :param kind: the ``(model, width, height, quality)`` of this batch's items (``None``: mixed).
    :return: ``(seeds, why)``: the quantiles, shortest first, whose median is the prior's median.
    """
    if value is None:
        return None, "no earlier run's result"
    if kind is None:
        return None, "this batch's items are not all of one model and size"
    summary = value.get(SUMMARY_KEY) if isinstance(value, dict) else None
    if not isinstance(summary, dict):
        return None, "the earlier run's result holds no job durations"
    if summary.get("format") != FORMAT or _int(summary.get("jobs")) is None:
        return None, "the earlier run's job durations are not in a known format"
    theirs = (
        summary.get("model"),
        _int(summary.get("width")),
        _int(summary.get("height")),
        summary.get("quality"),
    )
    if theirs != kind:
        return None, "the earlier run's jobs were of another model, size or quality"
    seeds = [summary.get(name) for name in QUANTILES]
    checked = [float(s) for s in seeds if isinstance(s, int | float) and not isinstance(s, bool)]
    if len(checked) != len(QUANTILES) or not all(_plausible(s) for s in checked):
        return None, "the earlier run's job durations are out of bounds"
    if checked != sorted(checked):
        return None, "the earlier run's job durations are not in order"
    return checked, ""


def _int(value: Any) -> int | None:
    """``value`` if it is a positive whole number (not a bool), else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _plausible(seconds: float) -> bool:
    return math.isfinite(seconds) and 0 < seconds <= MAX_SECONDS


class SeededPlanner(Planner):
    """A :class:`Planner` whose durations start with an earlier run's (the seeds).

    The seeds predict the first wave's ends; until the batch's own durations outnumber them, a
    read still comes at most ``poll_interval`` after the running jobs' statuses were last known
    (so jobs that end well before a too-long prior are seen that late at most). Jobs running past
    an end the seeds predicted too early are read again by the overdue rule, and the batch's own
    durations outweigh the seeds in the median once they outnumber them.

    :param seeds: the prior's durations (:func:`read_prior`).
    """

    def __init__(self, *, seeds: Sequence[float], **kwargs: Any) -> None:
        super().__init__(durations=seeds, **kwargs)
        self.seeds = len(self.durations)
        self.own = 0

    def learn(self, duration: float | None) -> None:
        """As :meth:`Planner.learn`; counts the batch's own durations."""
        super().learn(duration)
        if duration is not None and math.isfinite(duration) and duration >= 0:
            self.own += 1

    def next_poll_at(self, running: Sequence[float], *, refill: bool = False) -> float:
        """As :meth:`Planner.next_poll_at` while the seeds outnumber the batch's own durations, but
        no later than ``poll_interval`` after the last known statuses, and, once the last read saw
        a job running past the end the seeds predicted, no sooner than
        :data:`~airflow_provider_doitong.client.pacing.YOUNG_JOB_GAP` after it (as jobs of an
        unknown duration are read): a prior far too short costs no more reads than none. A read
        just before the predicted end does not delay the read at it."""
        at = super().next_poll_at(running, refill=refill)
        known = self.statuses_known_at(running)
        if known is None or self.own >= self.seeds:
            return at
        at = min(at, known + self.poll_interval)
        typical = self.typical_duration
        if typical is not None and any(start + typical <= self.last_poll_at for start in running):
            at = max(at, self.last_poll_at + min(YOUNG_JOB_GAP, self.poll_interval))
        return at

    def counts(self) -> list[int] | None:
        """``[seeds, own]`` while the seeds still outnumber the batch's own durations, for its ledger
        (see :func:`planner_from_ledger`); ``None`` once they do not."""
        return [self.seeds, self.own] if self.own < self.seeds else None


def seeded_counts(planner: Planner) -> list[int] | None:
    """What :func:`planner_from_ledger` needs to seed a resumed or retried task's planner again."""
    return planner.counts() if isinstance(planner, SeededPlanner) else None


def planner_from_ledger(*, durations: Sequence[float], seeded: Any, **settings: Any) -> Planner:
    """The planner of a task picking a batch up from its ledger (a resume, a retry): a
    :class:`SeededPlanner` again while the seeds it started with outnumbered its own durations
    (``seeded``: :func:`seeded_counts` as the ledger kept it, untrusted), so that its reads still
    come at most ``poll_interval`` apart; else a plain :class:`Planner` of ``durations``.

    :param durations: the durations the ledger kept, the seeds first.
    :param settings: the planner's other keyword arguments.
    """
    if isinstance(seeded, list) and len(seeded) == 2 and all(type(n) is int for n in seeded):
        seeds, own = seeded
        if 0 <= own < seeds and seeds + own <= len(durations):
            planner = SeededPlanner(seeds=durations, **settings)
            planner.seeds, planner.own = seeds, own
            return planner
    return Planner(durations=durations, **settings)
