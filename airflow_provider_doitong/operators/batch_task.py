"""A batch in its Airflow task: which task instance owns it, where its ledger is, and how the task
ends (the manifest, then its final answer); the account check before anything is submitted is
:mod:`.batch_balance`'s.

The ledger under ``output_path`` is the batch's state on every Airflow version; on Airflow 3.3 the
task state store also keeps a pointer to it (and a summary), so a retry whose ``output_path``
rendered somewhere else is refused rather than allowed to submit everything again.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_doitong._compat import AirflowFailException, task_instance_region, task_state_store
from airflow_provider_doitong.batch import manifest, saved_items
from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.ledger import ItemState, Ledger, LedgerError, summary_counts
from airflow_provider_doitong.batch.ledger_manifest import write_ledger_manifest
from airflow_provider_doitong.batch.progress import credits_spent
from airflow_provider_doitong.batch.stores import ledger_parts, open_store
from airflow_provider_doitong.client import DoitongError, DoitongJobFailed, DoitongTimeout
from airflow_provider_doitong.client.outcomes import Role
from airflow_provider_doitong.client.redaction import redact
from airflow_provider_doitong.operators import batch_prior
from airflow_provider_doitong.operators.airflow_errors import airflow_error
from airflow_provider_doitong.storage import Location, Place, UnsafeOutputPath, shown

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_doitong.batch.runner import BatchRunner

log = logging.getLogger(__name__)

#: The task state store key of the pointer to the ledger.
STATE_KEY = "doitong_batch"


def owner(context: Context) -> dict[str, Any]:
    """The task instance a batch belongs to: ``dag_id``, ``run_id``, ``task_id``, ``map_index``, and
    for one in a loop's iteration or a nested expansion (Airflow 3.4) its ``region``."""
    ti = context["ti"]
    me = {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id, "map_index": ti.map_index}
    region = task_instance_region(ti)
    return me if region is None else {**me, "region": region}


def read_pointer(context: Context) -> dict[str, Any] | None:
    """What an earlier try of this task instance left in the task state store, if anything."""
    store = task_state_store(context)
    value = store.get(STATE_KEY) if store is not None else None
    return value if isinstance(value, dict) else None


def save_pointer(context: Context, ledger: Ledger) -> None:
    """Keep the ledger's location and the counts in the task state store (where there is one)."""
    store = task_state_store(context)
    if store is not None:
        summary = {
            "ledger": ledger.store.location,
            **summary_counts(ledger),
            "credits": credits_spent(ledger),
        }
        store.set(STATE_KEY, summary)


def open_ledger(
    context: Context,
    output_path: str | Location,
    items: Sequence[BatchItem] | None,
    *,
    resuming: bool = False,
) -> tuple[Any, Ledger]:
    """The output folder and the batch's ledger (loaded, or started in memory for a first try).

    :param items: the batch's items, checked against the ledger; ``None`` when resuming (the
        caller reads them from the ledger's saved items: :func:`resume`).
    :param resuming: the task resumes after a deferral, so its ledger must exist.

    :raises AirflowFailException: if an earlier try kept its ledger elsewhere, if the folder holds
        another run's batch, if the ledger belongs to other prompts, is damaged, holds a value no
        ledger holds or is reached through a symlink, or if it is gone although jobs were submitted.
    """
    folder = Location.of(output_path if isinstance(output_path, Location) else str(output_path)).path
    me = owner(context)
    store = open_store(folder, me)
    pointer = read_pointer(context)
    if pointer and pointer.get("ledger") not in (None, store.location):
        raise AirflowFailException(
            f"output_path changed between tries: an earlier try keeps its ledger at {pointer['ledger']}, "
            f"this one would use {store.location}; not submitting anything again"
        )
    try:
        existing = manifest.read_manifest(folder)
        if existing is not None and existing.get("source") not in ({}, None, me):
            raise AirflowFailException(
                f"{shown(folder)} holds the batch of {existing.get('source')}; give each run its own "
                "output_path (e.g. .../{{ run_id }}/) so that no image is overwritten"
            )
        # the ledger only iterates the items: an ItemList is not copied into a million objects
        with no_collection():
            ledger = Ledger.open(store, items=cast("list[BatchItem] | None", items), owner=me)
    except (LedgerError, manifest.ManifestError, UnsafeOutputPath) as exc:
        raise AirflowFailException(f"output_path: {exc}") from None
    except OSError as exc:  # a file where the folder should be, no permission...
        raise AirflowFailException(
            f"output_path {shown(folder)} cannot be read ({exc.strerror or exc}); this try submitted nothing"
        ) from None
    if ledger.is_new and (resuming or (pointer and _did_anything(pointer))):
        raise AirflowFailException(
            f"The batch's ledger {store.location} is gone, but an earlier run of this task submitted jobs; "
            "starting over could pay for them twice. Restore the ledger, or clear the task to start over"
        )
    return folder, ledger


def items_place(folder: Any, context: Context) -> Place:
    """The ledger's folder, where the batch's items are saved (:mod:`.saved_items`)."""
    return Place(folder, tuple(ledger_parts(**owner(context))))


def save_items(context: Context, folder: Any, ledger: Ledger, items: Sequence[BatchItem]) -> None:
    """Save the checked items beside the ledger, once, and record their digest in its metadata
    (queued for the ledger's next flush, which follows the write).

    A try that finds them saved, as recorded, leaves them; one that finds them missing or changed
    (by hand, or a try stopped before its ledger was written) writes them again from the items it
    has just read and checked against the ledger.
    """
    place = items_place(folder, context)
    recorded = ledger.meta.get("items_sha256")
    if recorded is not None:
        found = saved_items.saved_digest(place)
        if found == recorded:
            return
        if found is not None:
            log.warning(
                "The batch's saved items %s are not those its ledger recorded; writing them again",
                place.shown(saved_items.ITEMS_NAME),
            )
    try:
        digest, size = saved_items.save_items(place, items)
    except (OSError, UnsafeOutputPath) as exc:
        raise AirflowFailException(
            f"Cannot save the batch's items to {place.shown(saved_items.ITEMS_NAME)} ({exc}); this "
            "try submitted nothing"
        ) from None
    ledger.set_meta(items_sha256=digest, items_bytes=size)


def resume(
    context: Context, output_path: str | Location, read_items: Callable[[], Sequence[BatchItem]]
) -> tuple[Any, Ledger, Sequence[BatchItem]]:
    """The output folder, the ledger and the items of a batch resuming after a deferral.

    The items are those the first try saved (:func:`save_items`), not the prompts read again: a
    prompts file changed or deleted since does not change the batch. Where there are none (a ledger
    from a provider that saved none, or the file deleted) the items are read again (``read_items``),
    checked against the ledger, and saved again.

    :raises AirflowFailException: as :func:`open_ledger`; or if the saved items are not the file
        the ledger recorded (the message names the file).
    """
    with no_collection():
        folder, ledger = open_ledger(context, output_path, None, resuming=True)
    recorded = ledger.meta.get("items_sha256")
    try:
        with no_collection():
            place = items_place(folder, context)
            saved = None if recorded is None else saved_items.load_items(place, sha256=recorded)
            if saved is None:
                log.warning(
                    "The batch's saved items %s are missing; reading the prompts again, checked "
                    "against the ledger",
                    place.shown(saved_items.ITEMS_NAME),
                )
            found = read_items() if saved is None else saved
        ledger.check_items(found)
        if saved is None:
            save_items(context, folder, ledger, found)  # (flushed with the ledger's next change)
    except saved_items.SavedItemsError as exc:
        ledger.close()
        raise AirflowFailException(
            f"{exc}. The batch cannot resume without them. Clear the task: its next try reads the "
            "prompts again, checks them against the ledger and saves them again"
        ) from None
    except LedgerError as exc:
        ledger.close()
        raise AirflowFailException(f"output_path: {exc}") from None
    return folder, ledger, found


@contextlib.contextmanager
def no_collection() -> Iterator[None]:
    """Python's cyclic garbage collector paused: reading a million items and records creates
    millions of objects (none in a cycle), and each collection would walk them all again, which
    took a third of a resume's set-up."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def write_manifest(
    context: Context, runner: BatchRunner, found: Sequence[BatchItem], *, secrets: Sequence[str] = ()
) -> dict[str, Any]:
    """Write the batch's ``manifest.json`` and ``index.html`` as its ledger stands.

    :param secrets: the connection's secrets, replaced wherever they appear (an error message the
        API echoed, say) before anything is written.
    :return: the task's summary (paths and counts, and where the ledger is; never the items).
    """
    ledger, ti = runner.ledger, context["ti"]
    estimated = ledger.meta.get("credits_estimated")
    stopped = budget_stop(runner)
    written = write_ledger_manifest(  # an entry at a time: a million items are never all held
        runner.folder,
        found,
        ledger.records,
        title=f"{ti.dag_id} / {ti.task_id}, run {ti.run_id}",
        credits_estimated=estimated,
        source=owner(context),
        extra=stopped,
        clean=lambda value: redact(value, secrets),
    )
    summary: dict[str, Any] = {
        "folder": written["folder"],
        "manifest": written["manifest"],
        "contact_sheet": written["contact_sheet"],
        "items": written["item_count"],
        "stored": written["image_count"],
        "failed": written["failed_count"],
        "credits_spent": written["credits_spent"],
        "credits_estimated": estimated,
        **stopped,
        **batch_prior.summary(ledger, found),  # what the task's next run expects its jobs to take
    }
    summary["ledger"] = ledger.store.location
    runner.log.info(
        "Wrote %s and %s: %d of %d stored, %d failed, %d credits spent",
        summary["manifest"],
        summary["contact_sheet"],
        summary["stored"],
        summary["items"],
        summary["failed"],
        summary["credits_spent"],
    )
    return summary


def budget_stop(runner: BatchRunner) -> dict[str, Any]:
    """``{"unsubmitted": n, "stopped": why}`` when ``max_credits`` left items unsubmitted, else ``{}``."""
    left = runner.ledger.count(ItemState.PENDING)
    if not runner.budget_stopped or not left:
        return {}
    return {"unsubmitted": left, "stopped": runner.stop_submitting}


def _did_anything(pointer: dict[str, Any]) -> bool:
    return any(pointer.get(state.value) for state in ItemState if state is not ItemState.PENDING)


def raise_for_outcome(
    runner: BatchRunner,
    reason: str,
    summary: dict[str, Any],
    *,
    max_failed_items: int,
    on_daily_limit: str,
    conn_id: str | None = None,
) -> None:
    """End the task as the batch ended, through the one outcome mapping (:mod:`~airflow_provider_doitong.client.outcomes`).

    The manifest is written by then. A refused key and a spent balance fail the task for good; a
    daily limit as ``on_daily_limit`` says; the deadline (running jobs are picked up by the next
    try) and too many failed items (the next try gives them another round) are worth a retry.
    """
    error: DoitongError | None = runner.stop_error
    if error is None and summary.get("unsubmitted"):
        raise AirflowFailException(
            f"The batch stopped submitting: {summary['stopped']}. {summary['unsubmitted']} of "
            f"{summary['items']} items were left unsubmitted; every image paid for is stored "
            f"({summary['stored']}, {summary['credits_spent']} credits; see {summary['manifest']}). Raise "
            "max_credits and clear the task to generate the rest"
        )
    if error is None and reason == "deadline":
        running = runner.ledger.count(ItemState.RUNNING, ItemState.COMPLETED)
        error = DoitongTimeout(
            f"The batch did not finish by its timeout: {summary['stored']} of {summary['items']} stored; "
            f"{running} jobs keep running at Doitong and the next try picks them up"
        )
    elif error is None and (summary["failed"] > max_failed_items or (reason and not runner.budget_stopped)):
        error = DoitongJobFailed(
            f"{summary['failed']} items failed, more than max_failed_items={max_failed_items}"
        )
    if error is not None:
        doing = (
            None if isinstance(error, DoitongTimeout) else f"The batch stopped (see {summary['manifest']})"
        )
        raise airflow_error(
            error, role=Role.SUBMITTER, on_daily_limit=on_daily_limit, doing=doing, conn_id=conn_id
        )
