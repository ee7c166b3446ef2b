"""How a batch's run ends: done (or stopped, saying why), or deferred until a time or a job's end."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Finished:
    """The batch stopped: everything is done, or ``reason`` says why not."""

    reason: str = ""


@dataclass(frozen=True)
class Defer:
    """A deferrable batch should wait in the triggerer until ``wake_at`` (``None``: no time) or until one
    of ``job_ids`` ends."""

    wake_at: float | None
    job_ids: list[str]


@dataclass(frozen=True)
class DeferPolicy:
    """When a deferrable batch leaves the worker (see :meth:`Planner.defer_until`).

    :param resume_lead: seconds from a trigger firing to the task running again.
    :param min_defer: the shortest quiet time worth a deferral.
    """

    resume_lead: float
    min_defer: float
