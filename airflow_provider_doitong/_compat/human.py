"""Human-in-the-loop requests (the batch's ``require_approval``), which arrived in Airflow 3.1.

The request is written with the SDK's ``upsert_hitl_detail`` and answered through the REST API's
``hitlDetails`` (the UI's *Required actions*). How the task waits differs, and :func:`await_human`
hides it: from 3.3 it parks in ``awaiting_input``, holding no worker slot and no trigger, and the
scheduler applies the timeout's default answer; on 3.1 and 3.2 it defers to the standard provider's
``HITLTrigger``, which polls the request in the triggerer and applies the default itself. Either
way the task resumes in the named method with the same event. On 3.0 there are no requests:
:data:`HUMAN_REVIEW_UNAVAILABLE` says so. On 3.1 and 3.2, ``dag.test()`` (and ``airflow tasks
test``) runs a deferred task's trigger in its own process, whose supervisor cannot read or answer
a request (only the triggerer's can: the trigger gets ``None`` back), and which passes the
trigger's event to the task without the rest of its resume arguments: :func:`human_review_problem`
refuses the option there when the task starts, before the first credit.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import exceptions as sdk_exceptions

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.definitions.context import Context


#: True where a task waits for a person's answer in ``awaiting_input`` (Airflow 3.3 and later);
#: False where it defers to the standard provider's ``HITLTrigger`` (3.1, 3.2).
AWAITS_INPUT: bool = hasattr(sdk_exceptions, "TaskAwaitingInput")


def _human_review_unavailable() -> str | None:
    from airflow import __version__

    try:
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail  # noqa: F401 - only whether it imports
    except ImportError:
        return (
            "a batch's human review needs Airflow 3.1 or later, which has human-in-the-loop requests "
            f"(this is Airflow {__version__})"
        )
    if not AWAITS_INPUT:
        try:
            from airflow.providers.standard.triggers.hitl import HITLTrigger  # noqa: F401
        except Exception as exc:  # ImportError, or the standard provider refusing this Airflow
            return (
                f"a batch's human review on Airflow {__version__} waits in "
                f"apache-airflow-providers-standard's HITLTrigger, which does not import: {exc}"
            )
    return None


#: Why this Airflow cannot ask a person (3.0), or ``None`` where it can (3.1 and later).
HUMAN_REVIEW_UNAVAILABLE: str | None = _human_review_unavailable()


def human_review_problem() -> str | None:
    """Why this task process cannot wait for a person's answer, or ``None`` where it can.

    Besides a release without requests (:data:`HUMAN_REVIEW_UNAVAILABLE`): on 3.1 and 3.2, a task run
    in-process by ``dag.test()`` or ``airflow tasks test``, whose deferral runs in a supervisor that
    cannot read a request. Ask it when the task starts, before anything is spent.
    """
    if HUMAN_REVIEW_UNAVAILABLE or AWAITS_INPUT:
        return HUMAN_REVIEW_UNAVAILABLE
    import sys

    supervisor = sys.modules.get("airflow.sdk.execution_time.supervisor")
    in_process = getattr(supervisor, "InProcessSupervisorComms", None)
    task_runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    if in_process is not None and isinstance(getattr(task_runner, "SUPERVISOR_COMMS", None), in_process):
        from airflow import __version__

        return (
            f"on Airflow {__version__}, dag.test() and 'airflow tasks test' run the review's wait "
            "(the standard provider's HITLTrigger) in the task's own process, which cannot read "
            "a human-in-the-loop request; run the DAG in Airflow (a scheduler and a triggerer), "
            "or use Airflow 3.3 or later"
        )
    return None


def await_human(
    operator: BaseOperator,
    context: Context,
    *,
    subject: str,
    body: str,
    options: list[str],
    default: str,
    timeout: timedelta | None,
    method_name: str,
    kwargs: dict[str, Any],
) -> NoReturn:
    """Ask a person to choose one of ``options``, and stop the task until they answer (or time runs out).

    The request is Airflow's own (its *Required actions* view and the REST API's ``hitlDetails``).
    The task resumes in ``method_name`` with ``kwargs`` and an ``event``: ``chosen_options``,
    ``responded_by_user`` (``None`` when the timeout chose ``default``), ``responded_at``, ``timedout``.
    """
    from airflow.sdk.execution_time.hitl import upsert_hitl_detail

    ti_id = context["task_instance"].id
    upsert_hitl_detail(
        ti_id=ti_id,
        options=options,
        subject=subject,
        body=body,
        defaults=[default],
        multiple=False,
        params={},
    )
    if AWAITS_INPUT:
        from airflow.sdk.exceptions import TaskAwaitingInput

        raise TaskAwaitingInput(method_name=method_name, kwargs=kwargs, timeout=timeout)
    # 3.1 and 3.2: the standard provider's trigger polls the request in the triggerer, and applies
    # the default itself once ``timeout_datetime`` (an instant, not a duration) has passed.
    from airflow.providers.standard.triggers.hitl import HITLTrigger
    from airflow.sdk.timezone import utcnow

    trigger = HITLTrigger(
        ti_id=ti_id,
        options=options,
        params={},
        defaults=[default],
        multiple=False,
        timeout_datetime=None if timeout is None else utcnow() + timeout,
    )
    operator.defer(trigger=trigger, method_name=method_name, kwargs=kwargs)
