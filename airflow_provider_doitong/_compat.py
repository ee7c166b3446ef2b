"""The one module that knows how the supported Airflow releases (3.0 to 3.4) differ.

Every other module imports the names below from here instead of from ``airflow.sdk`` wherever a
name moved, arrived late or behaves differently. Most of the work is done by
``apache-airflow-providers-common-compat``, which tries the newest location first and falls back to
the older one; this module adds only what it does not cover.

What differs, and what this provider does about it:

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
* The connection form: 3.2 and later read its extra fields from the declarative ``conn-fields`` of
  ``get_provider_info()``; 3.0 and 3.1 only from a hook's ``get_connection_form_widgets()``, which
  :func:`connection_form_widgets` builds from the same declaration.
* A trigger runs on the triggerer's event loop, where a blocking call to the supervisor (reading a
  connection, telling it a secret to mask) fails on 3.0 and 3.1: their triggerer bridges it with
  ``async_to_sync``, which refuses the loop's own thread. ``BaseHook.aget_connection`` arrived in
  3.1, and before 3.3.2 it still masks secrets with such a blocking call. :func:`aget_connection`
  and :func:`aextra` (common-compat's) and :func:`amask_secret` use the async call where the
  release has a safe one, else the blocking call in a worker thread.
* Asset events: from 3.4 an asset-scheduled DAG chooses whether the events queued for it share one
  run (``batch_asset_events``); the default, ``[scheduler] batch_asset_events``, is off: one run per
  event. Before 3.4 there is no choice: every event queued before the run was created lands in it.
  :func:`asset_schedule` makes a DAG's choice where the release offers one.
* Task group loops (3.4): every iteration runs the same task in the same run with the same map
  index (-1 unless mapped), told apart only by its dynamic region (``region_id`` and
  ``region_index``, which also tell apart nested expansions). :func:`task_instance_region` names it,
  so that a batch's ledger and manifest belong to one iteration; before 3.4 there is none.
* The UI plugin (:mod:`airflow_provider_doitong.ui`): every release mounts a plugin's FastAPI app
  (``fastapi_apps``, from the ``airflow.plugins`` entry point) and authenticates its routes only if
  the plugin asks, which it does with the release's own ``get_user`` and the auth manager's
  ``is_authorized_dag``. A link opened in the browser carries only cookies. The UI keeps its login
  token in the HttpOnly ``_token`` cookie, which ``get_user`` reads, from the release that moved it
  there (after 3.1.0; 3.3 is what the browser test runs); 3.0's UI, and 3.1.0's, keep it in the
  browser's local storage, so there the pages answer 401 to a browser (a request with an
  ``Authorization: Bearer`` token still works). The task instance tab (``external_views``) arrived
  in 3.1; 3.0 ignores it. Teams (``DagDetails.team_name``) arrived in 3.1; :func:`dag_details` sets
  it where the release has it.

* Human-in-the-loop requests (the batch's ``require_approval``) arrived in 3.1: the request is
  written with the SDK's ``upsert_hitl_detail`` and answered through the REST API's ``hitlDetails``
  (the UI's *Required actions*). How the task waits differs, and :func:`await_human` hides it: from
  3.3 it parks in ``awaiting_input``, holding no worker slot and no trigger, and the scheduler
  applies the timeout's default answer; on 3.1 and 3.2 it defers to the standard provider's
  ``HITLTrigger``, which polls the request in the triggerer and applies the default itself. Either
  way the task resumes in the named method with the same event. On 3.0 there are no requests:
  :data:`HUMAN_REVIEW_UNAVAILABLE` says so. On 3.1 and 3.2, ``dag.test()`` (and ``airflow tasks
  test``) runs a deferred task's trigger in its own process, whose supervisor cannot read or answer
  a request (only the triggerer's can: the trigger gets ``None`` back), and which passes the
  trigger's event to the task without the rest of its resume arguments: :func:`human_review_problem`
  refuses the option there when the task starts, before the first credit.

* Metrics: Airflow's ``Stats`` moved from ``airflow.stats`` (3.0, 3.1; it configures itself from
  ``[metrics]`` on first use) to the task SDK's ``airflow.sdk.observability.stats`` (3.2+), which
  emits nothing until the process has called its ``initialize``: the task runner and the triggerer
  do, ``dag.test()`` does when it first (de)serializes. :func:`stats` gives the one to use, set up
  from ``[metrics]`` where nobody has yet. 3.0's OpenTelemetry metrics are exported only every
  ``otel_interval_milliseconds``, never at exit (3.1 added the exit flush): :func:`stats` adds it
  there, so a short task process still sends its figures. (3.0 and 3.1 send them to ``[metrics]
  otel_host``/``otel_port`` and ignore ``OTEL_EXPORTER_OTLP_*``: a setting, documented.) Traces need nothing here: the OpenTelemetry API's current
  span is the task's where the release makes one (see ``docs/metrics.md``).

What 3.4 changes that needs nothing here: ``BaseTrigger.supports_triggerer_queue`` is now
``trigger_queue_inherited_from_task``, beside a new ``queue`` attribute; the provider's triggers set
neither (and have no attribute of their own by that name), so with ``[triggerer] queues_enabled``
they run on the deferred task's queue on every release. The task state store gains async calls
(``aget``/``aset``/``adelete``); the operators use it only from their synchronous ``execute``.
"""

from __future__ import annotations

import inspect
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
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
from airflow.sdk import exceptions as sdk_exceptions
from airflow.sdk.definitions.context import Context

if TYPE_CHECKING:
    from airflow.sdk import Asset, BaseOperator, Connection

#: True where a retry reattaches to the job an earlier try submitted: the task context has a
#: ``task_state_store`` (Airflow 3.3 and later); False where every try starts afresh.
DURABLE_RETRIES: bool = "task_state_store" in getattr(Context, "__annotations__", {})


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


__all__ = [
    "AWAITS_INPUT",
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
    "stats",
    "api_base_url",
    "connection_form_widgets",
    "dag_details",
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


async def aget_connection(hook: BaseHook, conn_id: str) -> Connection:
    """Read a connection without blocking (or deadlocking) the event loop, on every release.

    :param hook: the hook whose ``get_connection``/``aget_connection`` to use.
    """
    return await get_async_connection(conn_id, hook=hook)


async def aextra(conn: Connection) -> dict[str, Any]:
    """A connection's extras, read (and their secrets masked) safely on an event loop."""
    return await get_async_extra_dejson(conn)


async def amask_secret(secret: str) -> None:
    """Mask a secret from an event loop: the SDK's async masking where it exists, else in a thread.

    The thread is asgiref's, as for common-compat's: 3.0 and 3.1's triggerer reaches the supervisor
    through ``async_to_sync``, which from such a thread runs the call on the triggerer's own loop.
    From a plain thread it would start a second loop reading the same socket, and the triggerer's
    replies would come out of order.
    """
    try:
        from airflow.sdk.log import amask_secret as sdk_amask_secret
    except ImportError:
        from asgiref.sync import sync_to_async

        await sync_to_async(mask_secret)(secret)
    else:
        await sdk_amask_secret(secret)


def connection_form_widgets(conn_fields: dict[str, Any]) -> dict[str, Any]:
    """The connection form's extra fields as WTForms fields, for Airflow 3.0 and 3.1.

    ``conn_fields`` is the ``conn-fields`` declaration of ``get_provider_info()``, which 3.2 and
    later read instead (they never call a hook's ``get_connection_form_widgets()`` when it exists).
    3.0 and 3.1's UI stands in mocks for the imports below, so neither FAB nor WTForms needs to be
    installed, and knows four field classes: a choice is a text field with ``any_of``, a number a
    text field (the hook parses it), a secret a password field.
    """
    # FAB and WTForms: 3.1's UI stands in mocks where they are missing; 3.0's needs them installed.
    from flask_appbuilder.fieldwidgets import (  # type: ignore[import-not-found,import-untyped,unused-ignore]
        BS3PasswordFieldWidget,
        BS3TextFieldWidget,
    )
    from flask_babel import lazy_gettext  # type: ignore[import-not-found,import-untyped,unused-ignore]
    from wtforms import PasswordField, StringField  # type: ignore[import-not-found,import-untyped,unused-ignore]
    from wtforms.validators import Optional, any_of  # type: ignore[import-not-found,import-untyped,unused-ignore]

    widgets = {}
    for name, field in conn_fields.items():
        schema = field["schema"]
        validators: list[Any] = [Optional()]
        if "enum" in schema:
            validators.append(any_of([value for value in schema["enum"] if value is not None]))
        secret = schema.get("format") == "password"
        default = schema.get("default")
        if isinstance(default, int | float):
            default = f"{default:g}"  # a number is typed as text in these releases' form
        widgets[name] = (PasswordField if secret else StringField)(
            lazy_gettext(field["label"]),
            widget=BS3PasswordFieldWidget() if secret else BS3TextFieldWidget(),
            validators=validators,
            description=field["description"],
            default=default,
        )
    return widgets


def api_base_url() -> str:
    """``[api] base_url`` without its trailing ``/``, or ``""`` (links then stay on the UI's own origin)."""
    return str(conf.get("api", "base_url", fallback="") or "").rstrip("/")


def dag_details(dag_id: str) -> Any:
    """The auth manager's ``DagDetails`` of a DAG, with its team where the release has teams (3.1+).

    Imported from the api-server: call it there only.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.models.dag import DagModel

    get_team_name = getattr(DagModel, "get_team_name", None)
    if get_team_name is None:
        return DagDetails(id=dag_id)
    return DagDetails(id=dag_id, team_name=get_team_name(dag_id))


def stats() -> Any:
    """Airflow's ``Stats`` for this process (``incr``/``timing`` with ``tags``), configured from
    ``[metrics]``: StatsD, Datadog, OpenTelemetry, or nothing.
    """
    try:
        from airflow.sdk._shared.observability.metrics import stats as sdk_stats
    except ImportError:  # before 3.2: airflow.stats.Stats, which configures itself
        from airflow.providers.common.compat.sdk import Stats

        _flush_otel_metrics_at_exit(Stats)
        return Stats
    if getattr(sdk_stats, "_factory", True) is None:  # a process that has not set its metrics up
        from airflow.sdk.observability.metrics import stats_utils

        sdk_stats.initialize(
            factory=stats_utils.get_stats_factory(),
            export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True),
        )
    return sdk_stats.Stats


_OTEL_FLUSH_PID: int | None = None


def _flush_otel_metrics_at_exit(stats_class: Any) -> None:
    """Export this process's OpenTelemetry metrics when it exits, on Airflow 3.0.

    3.0's OpenTelemetry metrics logger exports every ``[metrics] otel_interval_milliseconds`` (60 s)
    and never at exit, so a task process shorter than that sends nothing; 3.1 registers the flush
    itself. A task process forked by the supervisor runs the exit hooks registered after its fork.
    """
    global _OTEL_FLUSH_PID
    import os

    if _OTEL_FLUSH_PID == os.getpid():
        return
    _OTEL_FLUSH_PID = os.getpid()
    try:
        from airflow.metrics import otel_logger  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return
    if hasattr(otel_logger, "flush_otel_metrics"):  # 3.1: registered by Airflow
        return
    stats_class.incr  # noqa: B018 - makes Airflow set the process's logger up, from [metrics]
    if isinstance(getattr(stats_class, "instance", None), otel_logger.SafeOtelLogger):
        import atexit

        from opentelemetry import metrics

        atexit.register(lambda: metrics.get_meter_provider().force_flush())  # type: ignore[attr-defined]
