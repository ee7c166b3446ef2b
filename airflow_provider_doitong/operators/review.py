"""A person's approval of a stored batch: ``FluxBatchOperator(require_approval=True)``.

After its images and manifest are stored, the batch asks for a review on Airflow's human-in-the-loop
machinery (Airflow 3.1+): the request, in Airflow's *Required actions* view and its REST API, links
the contact sheet and lists each image and its prompt, with the options ``Approve`` and ``Reject``.
The wait holds no worker slot (see :func:`~airflow_provider_doitong._compat.await_human`). The
answer, or the timeout's fallback, goes into the manifest's ``review`` record
(:func:`~airflow_provider_doitong.batch.manifest.record_review`). Approved, the task succeeds and
its outlets get their event; rejected, it fails without retry. Either way the images stay stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_doitong import _compat, ui
from airflow_provider_doitong._compat import AirflowFailException, AirflowOptionalProviderFeatureException
from airflow_provider_doitong.batch import manifest
from airflow_provider_doitong.client.choices import check_choice

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context

APPROVE, REJECT = "Approve", "Reject"
#: What an unanswered review becomes when ``approval_timeout`` passes.
ON_TIMEOUT = {"approve": APPROVE, "reject": REJECT}
#: The resume method's name on the operator.
RESUME_METHOD = "execute_review"
#: Images listed in the request's text (the contact sheet shows them all).
LISTED = 50


def checked_timeout(
    require_approval: bool, approval_timeout: float | timedelta | None, on_approval_timeout: str
) -> timedelta | None:
    """Refuse review options that cannot work, when the operator is built (before any credit).

    :return: ``approval_timeout`` as a timedelta (``None``: no limit).

    :raises AirflowOptionalProviderFeatureException: review asked for on an Airflow without
        human-in-the-loop requests (3.0).
    :raises ValueError: an unknown ``on_approval_timeout``, or a timeout that is not positive.
    """
    check_choice("on_approval_timeout", on_approval_timeout, ON_TIMEOUT)
    if isinstance(approval_timeout, int | float) and not isinstance(approval_timeout, bool):
        approval_timeout = timedelta(seconds=approval_timeout)
    if approval_timeout is not None and not (
        isinstance(approval_timeout, timedelta) and approval_timeout > timedelta(0)
    ):
        raise ValueError(
            f"approval_timeout must be a positive number of seconds or timedelta, got {approval_timeout!r}"
        )
    if require_approval and _compat.HUMAN_REVIEW_UNAVAILABLE:
        raise AirflowOptionalProviderFeatureException(
            f"require_approval=True: {_compat.HUMAN_REVIEW_UNAVAILABLE}; nothing was submitted"
        )
    return approval_timeout


def check_can_wait(operator: BaseOperator) -> None:
    """Refuse, when the task starts and before any credit, a review this process could not wait for
    (``dag.test()`` on Airflow 3.1 and 3.2: :func:`~airflow_provider_doitong._compat.human_review_problem`).

    :raises AirflowFailException: the review could not be waited for (no retry: none could).
    """
    problem = _compat.human_review_problem() if getattr(operator, "require_approval", False) else None
    if problem:
        raise AirflowFailException(f"require_approval=True: {problem}; nothing was submitted")


_MARKDOWN = frozenset("\\`*_{}[]()<>#+-.!|~&")


def _plain(text: Any) -> str:
    """A prompt as literal text in Markdown: no link, image, HTML or table cell of its own."""
    flat = " ".join(str(text).split())
    return "".join(f"\\{char}" if char in _MARKDOWN else char for char in flat)


def request_body(summary: Mapping[str, Any], sheet_url: str) -> str:
    """The request's Markdown: where the contact sheet is, the counts, and each stored image's prompt."""
    doc = manifest.read_manifest(summary["folder"]) or {}
    stored = [e for e in doc.get("items") or [] if e.get("status") == manifest.STORED]
    lines = [
        f"[Open the contact sheet]({sheet_url}) ({summary['contact_sheet']})",
        "",
        f"{summary['stored']} of {summary['items']} images stored, {summary['failed']} failed, "
        f"{summary['credits_spent']} credits spent. Approve to accept the batch; reject to fail the task "
        "(the images stay stored).",
        "",
        "| file | prompt |",
        "|---|---|",
    ]
    lines += [f"| `{e['file']}` | {_plain(e.get('prompt'))} |" for e in stored[:LISTED]]
    if len(stored) > LISTED:
        lines.append(f"| ... | {len(stored) - LISTED} more on the contact sheet |")
    return "\n".join(lines)


def request(
    operator: BaseOperator, context: Context, summary: dict[str, Any], state: dict[str, Any]
) -> NoReturn:
    """Ask for the review of a stored batch and stop the task until the answer (or the timeout).

    :param summary: the task's summary (what the manifest write returned).
    :param state: what the resume needs besides the summary (lineage), JSON values only.
    """
    ti = context["ti"]
    sheet_url = ui.page_url(
        ui.SHEET_PAGE,
        dag_id=ti.dag_id,
        run_id=ti.run_id,
        task_id=ti.task_id,
        map_index=-1 if ti.map_index is None else int(ti.map_index),
    )
    timeout: timedelta | None = getattr(operator, "approval_timeout", None)
    default = ON_TIMEOUT[getattr(operator, "on_approval_timeout", "reject")]
    operator.log.info(
        "Waiting for a review of %s (%s on timeout after %s)",
        summary["contact_sheet"],
        default,
        timeout or "never",
    )
    _compat.await_human(
        operator,
        context,
        subject=f"Review the Doitong images of {ti.dag_id} / {ti.task_id}, run {ti.run_id}",
        body=request_body(summary, sheet_url),
        options=[APPROVE, REJECT],
        default=default,
        timeout=timeout,
        method_name=RESUME_METHOD,
        kwargs={"summary": summary, "state": state},
    )


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value or "")


def decision(event: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``review`` record from Airflow's answer event.

    :raises AirflowFailException: for an event that is not an answer (a timeout without a fallback,
        an invalid answer): nothing is recorded.
    """
    if "error" in event:
        raise AirflowFailException(f"The review ended without an answer: {event.get('error')}")
    chosen = list(event.get("chosen_options") or [])
    if chosen not in ([APPROVE], [REJECT]):
        raise AirflowFailException(f"The review's answer {chosen!r} is not one of {APPROVE!r} and {REJECT!r}")
    user = event.get("responded_by_user") or {}
    timed_out = bool(event.get("timedout")) or not user
    return {
        "decision": manifest.APPROVED if chosen == [APPROVE] else manifest.REJECTED,
        "by": None if timed_out else user.get("name"),
        "by_id": None if timed_out else str(user.get("id")),
        "at": _when(event.get("responded_at")),
        "timed_out": timed_out,
    }


def conclude(operator: BaseOperator, event: Mapping[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Record the review in the manifest; return the summary with it when approved.

    :raises AirflowFailException: when rejected (by a person or the timeout's fallback).
    """
    record = decision(event)
    manifest.record_review(summary["folder"], **record)
    who = "the timeout's fallback (no answer in time)" if record["timed_out"] else record["by"]
    operator.log.info("The batch was %s by %s at %s", record["decision"], who, record["at"])
    if record["decision"] == manifest.REJECTED:
        raise AirflowFailException(
            f"The batch was rejected by {who} at {record['at']}; its {summary['stored']} images stay in "
            f"{summary['folder']} (the manifest records the review)"
        )
    return {**summary, "review": record}
