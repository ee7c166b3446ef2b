"""The Airflow side of :mod:`~airflow_provider_doitong.client.observability`: metrics through Airflow's own
``Stats`` (so ``[metrics]`` decides between StatsD, Datadog and OpenTelemetry), job spans through the
OpenTelemetry API (so ``[traces]`` decides whether they go anywhere).

Every metric is tagged with the connection id, and with the DAG and task where the client was made
in a task; the model where the figure is about one; a refusal with its kind. Never with the key,
a prompt or an error's message. In the triggerer one status read serves the jobs of many tasks of a
connection, so its status requests and 429s carry the connection only.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry import trace

from airflow_provider_doitong import _compat
from airflow_provider_doitong.client.base import VERSION
from airflow_provider_doitong.client.observability import JobTrace

log = logging.getLogger(__name__)

#: The span of one job, from its submission to its stored image.
JOB_SPAN = "doitong.job"
#: The span attribute of each metric tag that names where the job ran.
_SPAN_ATTRIBUTE = {"dag_id": "airflow.dag_id", "task_id": "airflow.task_id", "conn_id": "doitong.conn_id"}


def _nanoseconds(unix_time: float) -> int:
    return int(unix_time * 1_000_000_000)


class AirflowObserver:
    """Passes the client's and the batch's figures on to Airflow's metrics and OpenTelemetry.

    :param conn_id: the Doitong connection's id (never its key).
    :param dag_id: the DAG, when known.
    :param task_id: the task, when known.
    :param stats: Airflow's ``Stats`` (by default :func:`~airflow_provider_doitong._compat.stats`,
        looked up at the first figure).
    """

    def __init__(
        self,
        *,
        conn_id: str,
        dag_id: str | None = None,
        task_id: str | None = None,
        stats: Any = None,
    ) -> None:
        self.base_tags = {
            key: value
            for key, value in (("dag_id", dag_id), ("task_id", task_id), ("conn_id", conn_id))
            if value
        }
        self._stats = stats

    def tags(self, *, model: str | None = None, kind: str | None = None) -> dict[str, str]:
        """The tags of one figure: the fixed ones, and the model and kind where given."""
        tags = dict(self.base_tags)
        if model:
            tags["model"] = model
        if kind:
            tags["kind"] = kind
        return tags

    @property
    def stats(self) -> Any:
        if self._stats is None:
            self._stats = _compat.stats()
        return self._stats

    def count(self, name: str, value: int = 1, *, model: str | None = None, kind: str | None = None) -> None:
        try:
            self.stats.incr(name, value, tags=self.tags(model=model, kind=kind))
        except Exception:  # a metrics backend never fails a task
            log.debug("Could not emit metric %s", name, exc_info=True)

    def timing(self, name: str, seconds: float, *, model: str | None = None) -> None:
        try:
            self.stats.timing(name, seconds * 1000.0, tags=self.tags(model=model))
        except Exception:
            log.debug("Could not emit metric %s", name, exc_info=True)

    def job_stored(self, trace_: JobTrace) -> None:
        """One span for the job, under the current span (the task's, where Airflow traces tasks).

        The span starts at the submission and ends when the image is stored; events mark the end
        of the wait (``completed``) and the download. A no-op where no tracer provider is set.
        """
        try:
            tracer = trace.get_tracer("airflow_provider_doitong", VERSION)
            attributes: dict[str, Any] = {
                "doitong.job_id": trace_.job_id,
                "doitong.model": trace_.model,
                **{_SPAN_ATTRIBUTE[key]: value for key, value in self.base_tags.items()},
            }
            if trace_.credits is not None:
                attributes["doitong.credits_charged"] = trace_.credits
            if trace_.item is not None:
                attributes["doitong.item"] = trace_.item
            span = tracer.start_span(
                JOB_SPAN, start_time=_nanoseconds(trace_.submitted_at), attributes=attributes
            )
            span.add_event("submitted", timestamp=_nanoseconds(trace_.submitted_at))
            if trace_.ended_at is not None:
                span.add_event("completed", timestamp=_nanoseconds(trace_.ended_at))
            for name, when in trace_.events:
                span.add_event(name, timestamp=_nanoseconds(when))
            span.add_event("stored", timestamp=_nanoseconds(trace_.stored_at))
            span.end(end_time=_nanoseconds(trace_.stored_at))
        except Exception:
            log.debug("Could not record the span of job %s", trace_.job_id, exc_info=True)


def observer_for(conn_id: str) -> AirflowObserver:
    """The observer of a client made now: tagged with the running task's DAG and task, if any."""
    dag_id = task_id = None
    try:
        from airflow.sdk import get_current_context

        ti = get_current_context()["ti"]
        dag_id, task_id = ti.dag_id, ti.task_id
    except Exception:  # not in a task: the triggerer, a hook used from a script
        pass
    return AirflowObserver(conn_id=conn_id, dag_id=dag_id, task_id=task_id)
