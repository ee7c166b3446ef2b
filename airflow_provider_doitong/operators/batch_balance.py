"""A batch's account check in its Airflow task, before anything is submitted: the estimate against
``max_credits``, the credits still to spend against the account's balance and the credit floor,
the images the image cache holds (and the copies an earlier try stored) counted at 0.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from airflow_provider_doitong._compat import AirflowFailException
from airflow_provider_doitong.batch.budget import budget_problem, counting_hits
from airflow_provider_doitong.batch.items import BatchItem, estimated_credits
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.client import DoitongError
from airflow_provider_doitong.operators.airflow_errors import airflow_error
from airflow_provider_doitong.storage import shown

if TYPE_CHECKING:
    from airflow_provider_doitong.batch.runner import BatchRunner


def check_balance(
    runner: BatchRunner,
    found: Sequence[BatchItem],
    estimate: int,
    *,
    max_credits: int | None = None,
    on_daily_limit: str,
    conn_id: str | None = None,
) -> None:
    """Refuse a batch estimated over ``max_credits``, or whose items still to generate cost more than
    the account's balance, or would take it below the runner's credit floor.

    The images the image cache holds cost nothing: when the full estimate is refused, they are looked
    up (nothing claimed or written) and counted at 0 (:func:`~airflow_provider_doitong.batch.budget.counting_hits`).

    :param estimate: the whole batch's estimated credits (kept in the ledger for the manifest).
    :param max_credits: the most the whole batch may spend, if capped (checked before the account is read).
    :param conn_id: the Airflow connection, named when its API key is refused.
    :raises AirflowFailException: if the balance does not cover them (nothing is submitted).
    :raises AirflowException: as :mod:`~airflow_provider_doitong.client.outcomes` says, if the account
        cannot be read.
    """
    ledger = runner.ledger
    pending = ledger.in_state(ItemState.PENDING)
    to_spend = estimated_credits(found, only=pending)
    cached = functools.cache(lambda: _hits(runner, pending))  # looked up once, if at all
    problem = _over_cap(found, estimate, max_credits, free=lambda: cached() + _copied(ledger))
    if problem:
        raise AirflowFailException(problem)
    balance = _balance(runner, on_daily_limit=on_daily_limit, conn_id=conn_id) if to_spend else None

    def short(off: int) -> str | None:
        return budget_problem(
            images=len(found),
            estimate=estimate,
            to_spend=to_spend - off,
            balance=balance if to_spend - off else None,
            max_credits=None,
            credit_floor=runner.credit_floor,
        )

    problem = counting_hits(short, lambda: estimated_credits(found, only=cached()))
    if problem:
        raise AirflowFailException(problem)
    ledger.set_meta(credits_estimated=estimate)
    runner.log.info(
        "%d items estimated at %d credits (%d still to generate)%s; images go to %s",
        len(found),
        estimate,
        to_spend,
        f"; the account has {balance}" if balance is not None else "",
        shown(runner.folder),
    )


def _balance(runner: BatchRunner, *, on_daily_limit: str, conn_id: str | None) -> int:
    """The account's credit balance, or the task's failure as the one outcome mapping says."""
    try:
        return runner.client.get_account().credits
    except DoitongError as exc:
        raise airflow_error(
            exc,
            on_daily_limit=on_daily_limit,
            doing="Reading the Doitong account failed",
            conn_id=conn_id,
        ) from None


def _over_cap(
    found: Sequence[BatchItem], estimate: int, max_credits: int | None, *, free: Callable[[], list[int]]
) -> str | None:
    """Why the batch is over ``max_credits``, the items ``free`` names (cache hits, and copies an
    earlier try stored: 0 credits, as the running budget counts them) counted at 0."""
    items = functools.cache(free)

    def over(off: int) -> str | None:
        images = len(found) - (len(items()) if off else 0)
        return budget_problem(
            images=images, estimate=estimate - off, to_spend=0, balance=None, max_credits=max_credits
        )

    return counting_hits(over, lambda: estimated_credits(found, only=items()))


def _hits(runner: BatchRunner, pending: list[int]) -> list[int]:
    """The pending items the image cache holds now (none without a cache)."""
    return [] if runner.cache is None else runner.cache.hits_now(pending)


def _copied(ledger: Ledger) -> list[int]:
    """The items an earlier try stored from the image cache (they cost nothing)."""
    return [i for i in ledger.in_state(ItemState.STORED) if ledger.records[i].from_cache]
