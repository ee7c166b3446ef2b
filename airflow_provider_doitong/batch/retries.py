"""An item's rounds in a batch: another after a failed job or a lost answer, or failure for good.

A failed job is refunded, so its item is submitted again, up to ``item_retries`` times in one task
try; an item whose submission's answer was lost (a crash, a dropped connection after the POST) may
have been charged, so it goes again only under the ``resubmit`` policy. A new task try gives the
items an earlier try failed another round. The ledger's changes here are not flushed: the runner
flushes them with its next step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_doitong.batch.ledger import ItemState
from airflow_provider_doitong.client import observability

if TYPE_CHECKING:
    from airflow_provider_doitong.batch.runner import BatchRunner


def start_try(runner: BatchRunner, *, try_number: int, deadline: float | None) -> int:
    """Begin a task try (not flushed): items that failed in an earlier try get another round.

    An item whose job completed but whose image could not be stored is stored again (its job
    is not paid for twice); other failed items are submitted again (failed jobs are refunded),
    except those an ambiguous submission failed under the ``fail`` policy.

    :param try_number: the task's try.
    :param deadline: the try's deadline (Unix time), if any.
    :return: how many items got another round.
    """
    again = 0
    if runner.ledger.meta.get("try") not in (None, try_number):
        for record in runner.ledger:
            if record.failures and record.state is not ItemState.FAILED:
                runner.ledger.update(record.index, failures=0)  # item retries count per try
        for index in runner.ledger.in_state(ItemState.FAILED):
            record = runner.ledger.records[index]
            if runner.on_ambiguous_submission == "fail" and record.ambiguous:
                continue
            state = ItemState.COMPLETED if record.job_id else ItemState.PENDING
            runner.ledger.update(index, state=state, failures=0)
            again += 1
    runner.ledger.set_meta(**{"try": try_number, "deadline": deadline})
    runner.planner.deadline = deadline
    return again


def resolve_ambiguous(runner: BatchRunner) -> int:
    """Settle items left ``submitting`` by a crash: their POST may have created a job (not flushed).

    :return: how many there were.
    """
    found = runner.ledger.in_state(ItemState.SUBMITTING)
    for index in found:
        item = runner.items[index]
        message = (
            f"item {index + 1} ({item.source}) was being submitted when an earlier try stopped; its "
            "answer was never recorded, so a job may exist and be charged"
        )
        runner.log.warning("%s", message)
        setback(runner, index, message, ambiguous=True)
    return len(found)


def setback(runner: BatchRunner, index: int, message: str, *, ambiguous: bool = False) -> None:
    """An item's job failed (or its submission is ambiguous): submit it again, or fail it for good."""
    record = runner.ledger.records[index]
    if not ambiguous:  # a job that ran and failed (refunded)
        runner.client.observer.count(observability.JOBS_FAILED, model=runner.items[index].request.provider)
    failures = record.failures + 1
    changes: dict[str, Any] = {"failures": failures, "error": message, "job_id": None, "credits": None}
    if ambiguous:
        changes["ambiguous"] = record.ambiguous + 1
    runner.budget.refunded(index)  # a failed job is refunded; an ambiguous one counts at its estimate
    final = failures > runner.item_retries or (ambiguous and runner.on_ambiguous_submission == "fail")
    runner.ledger.update(index, state=ItemState.FAILED if final else ItemState.PENDING, **changes)
    if final:
        runner.log.error("Item %d/%d failed for good: %s", index + 1, len(runner.items), message)
    else:
        runner.log.warning(
            "Item %d/%d: %s; submitting it again (retry %d of %d)%s",
            index + 1,
            len(runner.items),
            message,
            failures,
            runner.item_retries,
            ": this may charge it twice" if ambiguous else "",
        )
