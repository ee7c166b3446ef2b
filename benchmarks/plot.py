"""Requests per second over the batch, this provider against the baseline (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


def _total(timeline: dict[str, Any]) -> list[int]:
    series = list(timeline["kinds"].values())
    if not series:
        return []
    return [sum(values) for values in zip(*series, strict=True)]


def plot_requests(batch: dict[str, Any], path: Path) -> Path:
    """Two panels: all requests per second for both sides with the plan's rate; ours by kind."""
    settings = batch["settings"]
    limit = settings["requests_per_window"] / settings["window_real_seconds"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    named = (
        ("baseline", "tab:red"),
        ("ours", "tab:blue"),
        ("batch_operator", "tab:green"),
        ("batch_operator_deferrable", "tab:purple"),
    )
    for name, colour in named:
        if batch.get(name) is None:
            continue
        timeline = batch[name]["timeline"]
        total = _total(timeline)
        xs = [i * timeline["bin_s"] for i in range(len(total))]
        label = f"{name}: {batch[name]['total_requests']} requests, {batch[name]['http_429']} answered 429"
        top.step(xs, total, where="post", color=colour, label=label, linewidth=1)
        limited = timeline["http_429"]
        if any(limited):
            top.fill_between(xs, limited, step="post", color=colour, alpha=0.25)
    top.axhline(limit, color="black", linestyle="--", linewidth=1, label=f"plan rate ({limit:.1f}/s)")
    top.set_ylabel("requests / s")
    any_side = next(batch[name] for name, _ in named if batch.get(name))
    top.set_title(
        f"{any_side['prompts']} prompts, {settings['plan']} plan, jobs of {settings['job_real_seconds']:.0f}s "
        f"(shaded: 429s)"
    )
    top.legend(loc="upper right", fontsize=8)
    for name, style in (("ours", "-"), ("batch_operator", ":")):
        timeline = (batch.get(name) or {}).get("timeline") or {"kinds": {}, "bin_s": 1.0}
        for kind, values in sorted(timeline["kinds"].items()):
            xs = [i * timeline["bin_s"] for i in range(len(values))]
            bottom.step(xs, values, where="post", label=f"{name}: {kind}", linewidth=1, linestyle=style)
    bottom.axhline(limit, color="black", linestyle="--", linewidth=1)
    bottom.set_ylabel("requests / s (by kind)")
    bottom.set_xlabel("seconds since the first submission")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
