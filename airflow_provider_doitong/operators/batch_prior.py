"""The duration prior of a ``FluxBatchOperator`` run: read from the task's latest earlier result.

What the prior is and how it is checked: :mod:`~airflow_provider_doitong.batch.prior`. Reading it
is an optimisation only: any failure to read it, or a value that does not pass, leaves the batch
to learn its jobs' durations as it would without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_doitong._compat import earlier_result
from airflow_provider_doitong.batch import prior
from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.ledger import Ledger

if TYPE_CHECKING:
    from airflow.sdk import Context


def seeds(context: Context, ledger: Ledger, items: Sequence[BatchItem], log: Any) -> list[float]:
    """The durations to seed this batch's planner with: none when its ledger holds learned ones
    (a retry: those are its own), else the latest earlier run's, if they pass
    :func:`~airflow_provider_doitong.batch.prior.read_prior`."""
    if ledger.meta.get("durations"):
        return []
    try:
        value = earlier_result(context)
    except Exception as exc:  # any failure of the read: the batch learns as without a prior
        log.info("No job durations from an earlier run: reading its result failed (%s)", type(exc).__name__)
        return []
    found, why = prior.read_prior(value, kind=prior.kind_of(items) if value is not None else None)
    if found is None:
        log.info("No job durations from an earlier run: %s", why)
        return []
    log.info(
        "Expecting jobs of about %.1fs (%.1f-%.1fs), as an earlier run of this task saw them",
        found[len(found) // 2],
        found[0],
        found[-1],
    )
    return found


def summary(ledger: Ledger, items: Sequence[BatchItem]) -> dict[str, Any]:
    """``{"job_durations": ...}`` for the task's result, or ``{}`` (see :func:`prior.summarize`)."""
    made = prior.summarize(ledger, items)
    return {} if made is None else {prior.SUMMARY_KEY: made}


__all__ = ["seeds", "summary"]
