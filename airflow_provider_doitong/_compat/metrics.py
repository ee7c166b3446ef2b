"""Metrics: which ``Stats`` a process uses, and how it is set up, on each release.

Airflow's ``Stats`` moved from ``airflow.stats`` (3.0, 3.1; it configures itself from ``[metrics]``
on first use) to the task SDK's ``airflow.sdk.observability.stats`` (3.2+), which emits nothing
until the process has called its ``initialize``: the task runner and the triggerer do,
``dag.test()`` does when it first (de)serializes. :func:`stats` gives the one to use, set up from
``[metrics]`` where nobody has yet. 3.0's OpenTelemetry metrics are exported only every
``otel_interval_milliseconds``, never at exit (3.1 added the exit flush): :func:`stats` adds it
there, so a short task process still sends its figures. (3.0 and 3.1 send them to ``[metrics]
otel_host``/``otel_port`` and ignore ``OTEL_EXPORTER_OTLP_*``: a setting, documented.) Traces need
nothing here: the OpenTelemetry API's current span is the task's where the release makes one (see
``docs/metrics.md``).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import conf


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
