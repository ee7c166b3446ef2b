"""Batch runners run side by side in threads, as several processes would run their batches."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any


def run_together(runners: Sequence[Any], *, timeout: float = 300.0) -> list[Any]:
    """Each runner's ``run()`` in a thread of its own, started together; their outcomes, as they end."""
    outcomes: list[Any] = []
    threads = [threading.Thread(target=lambda r=r: outcomes.append(r.run())) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return outcomes
