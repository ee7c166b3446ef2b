"""What a batch's planner is told and what it answers: the plan's limits, the ledger's view, and a step.

Plain values, without I/O: the :class:`~airflow_provider_doitong.batch.planner.Planner` takes
:class:`Limits` and :class:`View` and answers a :class:`BatchStep`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class BatchAction(str, enum.Enum):
    """The kinds of a batch's step (a single image's try has its own: ``submission.Action``)."""

    SUBMIT = "submit"
    POLL = "poll"
    STORE = "store"
    SLEEP = "sleep"
    DONE = "done"


@dataclass(frozen=True)
class BatchStep:
    """One thing for the batch to do.

    :param action: what.
    :param count: for ``submit``, how many pending items.
    :param seconds: for ``sleep``, how long; for ``store``, how long storing may go on before the
        runner must ask again (a read or a submission is due then).
    :param reason: for ``sleep`` and ``done``, why (for logs and the final answer).
    """

    action: BatchAction
    count: int = 0
    seconds: float = 0.0
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The plan's limits the batch keeps within.

    :param concurrency: jobs running at once.
    :param requests_per_window: requests per rate-limit window (``None``: not limited).
    :param window_s: the window's length in seconds.
    :param slot_share: ``concurrency`` is a share of the account's job slots, below the plan's (a
        pool's share, say): slots the batch leaves idle go to no one else, nor do others' to it.
    """

    concurrency: int
    requests_per_window: int | None
    window_s: float
    slot_share: bool = False


@dataclass(frozen=True, kw_only=True)
class View:
    """What the ledger holds now.

    :param pending: items waiting to be submitted.
    :param running: the ``submitted_at`` (Unix time) of every running job.
    :param to_store: completed items whose image is not stored yet.
    :param stop_submitting: set once the batch must not submit more (too many failures, a daily
        limit, no credits left): running jobs are still waited for and stored.
    :param fatal: set when nothing more can be done (the key was refused).
    """

    pending: int
    running: Sequence[float]
    to_store: int
    stop_submitting: str = ""
    fatal: str = ""
