"""The one place that knows how the supported Airflow releases (3.0 to 3.4) differ.

Every other module imports the names below from here instead of from ``airflow.sdk`` wherever a
name moved, arrived late or behaves differently. Most of the work is done by
``apache-airflow-providers-common-compat``, which tries the newest location first and falls back to
the older one; this package adds only what it does not cover, one module a difference that needs
more than a name: :mod:`.human` (human-in-the-loop requests), :mod:`.triggerer` (connections and
secrets on the triggerer's event loop), :mod:`.ui` (the connection form, the UI plugin),
:mod:`.metrics` (Airflow's ``Stats``) and :mod:`.xcom` (an earlier run's result). Import every name from this package itself.

What differs here, and what this provider does about it:

* ``context["task_state_store"]`` arrived in Airflow 3.3. There the operator keeps its submission
  record (job id and request fingerprint) in it, so a retry (after a worker crash, a timeout or a
  failed try) reattaches to the job instead of paying for it again. Below 3.3 there is no store, so
  every try submits anew: nothing survives from one try to the next. What still holds there: a
  deferred wait carries the job id in the trigger's kwargs, so a triggerer restart reattaches to
  the same job, and the task resumes (``execute_complete``) without submitting again. :data:`DURABLE_RETRIES` says which case applies;
  :func:`task_state_store` gives the store, or ``None``.
  Airflow 3.0 also keeps a try's resume point into its retry (3.1 clears it), so there a retry of a
  task whose deferred wait failed replays that failure instead of starting afresh; the README says so.
* ``airflow.sdk.BaseHook`` arrived in 3.1, ``airflow.sdk.conf`` in 3.2, and
  ``AirflowFailException``/``AirflowNotFoundException`` in ``airflow.sdk.exceptions`` in 3.2.
* Asset events: from 3.4 an asset-scheduled DAG chooses whether the events queued for it share one
  run (``batch_asset_events``); the default, ``[scheduler] batch_asset_events``, is off: one run per
  event. Before 3.4 there is no choice: every event queued before the run was created lands in it.
  :func:`asset_schedule` makes a DAG's choice where the release offers one.
* Task group loops (3.4): every iteration runs the same task in the same run with the same map
  index (-1 unless mapped), told apart only by its dynamic region (``region_id`` and
  ``region_index``, which also tell apart nested expansions). :func:`task_instance_region` names it,
  so that a batch's ledger and manifest belong to one iteration; before 3.4 there is none.

* A deferred task resumed within seconds of its deferral can be failed by the scheduler on every
  supported release (apache/airflow#66374, #67287, #72716): the executor's report that the
  deferring process exited, drained after the resume, reads as a state changed externally, and
  the try fails (a run fails where the task has no retries). Guards in 3.2.2 and 3.3 cover some
  of its forms, not all: it was seen on 3.3.2 with a 4-s job, the report drained 5.7 s after the
  deferral. So no task of this provider is resumed sooner than :func:`deferral_settle_s` after
  its deferral (:data:`DEFERRAL_SETTLE_S` unless ``[doitong] deferral_settle_seconds`` says
  otherwise): a shorter refusal wait is slept in the worker, and a trigger (a job's, a batch's)
  that would fire sooner holds its event until then. A batch defers only for a quiet stretch of
  its ``min_defer_seconds`` (10 s by default), so its hold matters where that is set lower.

What 3.4 changes that needs nothing here: ``BaseTrigger.supports_triggerer_queue`` is now
``trigger_queue_inherited_from_task``, beside a new ``queue`` attribute; the provider's triggers set
neither (and have no attribute of their own by that name), so with ``[triggerer] queues_enabled``
they run on the deferred task's queue on every release. The task state store gains async calls
(``aget``/``aset``/``adelete``); the operators use it only from their synchronous ``execute``.
"""

from __future__ import annotations

import inspect
import uuid
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowNotFoundException,
    AirflowOptionalProviderFeatureException,
    AirflowSkipException,
    BaseHook,
    conf,
    mask_secret,
)
from airflow.sdk.definitions.context import Context

from airflow_provider_doitong._compat.human import (
    AWAITS_INPUT,
    HUMAN_REVIEW_UNAVAILABLE,
    await_human,
    human_review_problem,
)
from airflow_provider_doitong._compat.metrics import stats
from airflow_provider_doitong._compat.triggerer import aextra, aget_connection, amask_secret
from airflow_provider_doitong._compat.ui import api_base_url, connection_form_widgets, dag_details
from airflow_provider_doitong._compat.xcom import earlier_result

if TYPE_CHECKING:
    from airflow.sdk import Asset

#: True where a retry reattaches to the job an earlier try submitted: the task context has a
#: ``task_state_store`` (Airflow 3.3 and later); False where every try starts afresh.
DURABLE_RETRIES: bool = "task_state_store" in getattr(Context, "__annotations__", {})

#: The shortest time from a deferral to its resume by default (seconds): sooner, Airflow may fail
#: the resumed try (see above).
DEFERRAL_SETTLE_S = 8.0
#: The longest ``[doitong] deferral_settle_seconds`` taken (seconds).
MAX_DEFERRAL_SETTLE_S = 600.0


def deferral_settle_s() -> float:
    """The shortest time from a deferral to its resume in force: ``[doitong]
    deferral_settle_seconds`` (0 where the deployment's Airflow has the race fixed, more where its
    executor reports a process's exit slowly), else :data:`DEFERRAL_SETTLE_S`; a value that is not
    a number from 0 to :data:`MAX_DEFERRAL_SETTLE_S` is ignored.
    """
    try:
        value = conf.getfloat("doitong", "deferral_settle_seconds", fallback=DEFERRAL_SETTLE_S)
    except Exception:  # not a number: Airflow's own error differs between releases
        return DEFERRAL_SETTLE_S
    return value if 0 <= value <= MAX_DEFERRAL_SETTLE_S else DEFERRAL_SETTLE_S


__all__ = [
    "AWAITS_INPUT",
    "DEFERRAL_SETTLE_S",
    "MAX_DEFERRAL_SETTLE_S",
    "DURABLE_RETRIES",
    "AirflowException",
    "AirflowFailException",
    "HUMAN_REVIEW_UNAVAILABLE",
    "AirflowNotFoundException",
    "AirflowOptionalProviderFeatureException",
    "AirflowSkipException",
    "BaseHook",
    "aextra",
    "aget_connection",
    "amask_secret",
    "asset_schedule",
    "await_human",
    "conf",
    "deferral_settle_s",
    "stats",
    "api_base_url",
    "connection_form_widgets",
    "dag_details",
    "earlier_result",
    "human_review_problem",
    "mask_secret",
    "task_instance_region",
    "task_state_store",
]


def task_state_store(context: Context) -> Any:
    """The task instance's state store (``get``/``set``/``delete`` of JSON values), or ``None``
    before Airflow 3.3, where there is none.
    """
    return context.get("task_state_store")


def task_instance_region(ti: Any) -> str | None:
    """The dynamic region (a loop's iteration, a nested expansion) a task instance runs in, as
    ``<region id>.<region index>``; ``None`` outside any, where dag, run, task and map index say all
    (always before Airflow 3.4). It stays the same from one try of the task instance to the next.
    """
    region_id = getattr(ti, "region_id", None)
    if region_id is None or uuid.UUID(str(region_id)).int == 0:  # the zero UUID: no region
        return None
    return f"{region_id}.{ti.region_index}"


def asset_schedule(asset: Asset, *, batch_asset_events: bool) -> Any:
    """A DAG's ``schedule`` on ``asset``, its queued events in one run each or together where it can choose.

    On Airflow 3.4 and later, an ``AssetTriggeredTimetable`` with ``batch_asset_events`` (which
    overrides ``[scheduler] batch_asset_events``); before, ``[asset]``, whose runs always take every
    event queued before they were created.
    """
    import airflow.sdk

    timetable = getattr(airflow.sdk, "AssetTriggeredTimetable", None)  # public from 3.4, with the choice
    if timetable is None or "batch_asset_events" not in inspect.signature(timetable).parameters:
        return [asset]
    return timetable(asset, batch_asset_events=batch_asset_events)
