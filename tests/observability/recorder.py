"""An observer that keeps what it was told, for tests of the points that report to it."""

from __future__ import annotations

from collections import Counter

from airflow_provider_doitong.client.observability import JobTrace


class RecordingObserver:
    """Keeps every figure: ``counts[(name, model, kind)]``, ``timings[name]`` and the stored jobs."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str | None, str | None]] = Counter()
        self.timings: dict[str, list[float]] = {}
        self.traces: list[JobTrace] = []

    def count(self, name: str, value: int = 1, *, model: str | None = None, kind: str | None = None) -> None:
        self.counts[(name, model, kind)] += value

    def timing(self, name: str, seconds: float, *, model: str | None = None) -> None:
        self.timings.setdefault(name, []).append(seconds)

    def job_stored(self, trace: JobTrace) -> None:
        self.traces.append(trace)

    def total(self, name: str) -> int:
        """A counter's total over every model and kind."""
        return sum(value for (counted, _, _), value in self.counts.items() if counted == name)
