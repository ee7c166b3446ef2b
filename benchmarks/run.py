#!/usr/bin/env python3
"""Run the benchmarks: ``python benchmarks/run.py [--quick] [--json PATH] [--only batch,triggerer,parse]``.

``--only throughput`` runs the batch operator against what the plan allows (short jobs, the pro plan's
day, enterprise limits with a 100-ms round trip, a first run over job durations, a million-line
prompts file).

``--only distributed`` runs the batch on a distributed Airflow (CeleryExecutor, Redis, PostgreSQL,
two workers, two triggerers, S3); it needs the ``distributed`` extra: ``python3 dev.py distributed``.

Writes a JSON document (layout in ``benchmarks/README.md``), a Markdown table (printed and saved beside
the JSON) and a PNG of requests per second over the batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.batch import BatchSettings, run_batch  # noqa: E402
from benchmarks.cache import CacheSettings, cache_markdown, run_cache  # noqa: E402
from benchmarks.parse import run_parse  # noqa: E402
from benchmarks.plot import plot_requests  # noqa: E402
from benchmarks.report import assemble, evaluate_goals, markdown  # noqa: E402
from benchmarks.scale import run_scale  # noqa: E402
from benchmarks.shared_account import SharedAccountSettings, run_shared_account  # noqa: E402
from benchmarks.throughput import SCENARIOS as THROUGHPUT_SCENARIOS  # noqa: E402
from benchmarks.throughput import profile as throughput_profile  # noqa: E402
from benchmarks.throughput import run_throughput, with_changes  # noqa: E402
from benchmarks.triggerer import TriggererSettings, run_triggerer  # noqa: E402

SECTIONS = ("batch", "scale", "triggerer", "parse")
#: Sections run only when named in ``--only``.
OPTIONAL_SECTIONS = ("distributed", "shared_account", "throughput", "cache")
#: The shared-account scenario's two forms: (name, each batch's share of the plan's job slots).
SHARED_ACCOUNT_FORMS = (("paced", None), ("pooled", 4))
#: The quick profile's batch: the realistic profile of 16-s jobs.
REALISTIC_16S = BatchSettings(
    prompts=30,
    time_scale=0.25,
    job_seconds=64.0,
    poll_interval=3.2,
    batch_poll_interval=10.0,
    batch_min_defer=5.0,
)
PROFILES = {
    "quick": {
        "batch": REALISTIC_16S,
        "scale": BatchSettings(
            prompts=1_200, time_scale=0.02, job_seconds=20.0, poll_interval=3.2, batch_poll_interval=2.0
        ),
        "triggerer": TriggererSettings(waits=1000, job_seconds=20.0, poll=2.0),
        "parse_repetitions": 7,
        "distributed": {"prompts": 20, "time_scale": 0.25, "job_seconds": 64.0, "poll_interval": 8.0},
        "throughput": throughput_profile(
            day_prompts=2_000, enterprise_deadline_s=300.0, first_runs=REALISTIC_16S
        ),
    },
    "full": {
        "batch": BatchSettings(
            prompts=200, time_scale=0.25, job_seconds=280.0, poll_interval=9.0, batch_poll_interval=30.0
        ),
        "scale": BatchSettings(
            prompts=2_000, time_scale=0.02, job_seconds=20.0, poll_interval=3.2, batch_poll_interval=2.0
        ),
        "triggerer": TriggererSettings(waits=1000, job_seconds=60.0, poll=2.0),
        "parse_repetitions": 25,
        "distributed": {"prompts": 60, "time_scale": 0.25, "job_seconds": 160.0, "poll_interval": 20.0},
        "throughput": throughput_profile(
            day_prompts=10_000, enterprise_deadline_s=900.0, first_runs=REALISTIC_16S
        ),
    },
}


def git_state() -> dict[str, object]:
    """The commit benchmarked, and whether the provider's files differed from it."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "git_commit": git("rev-parse", "HEAD"),
        "provider_uncommitted_changes": bool(git("status", "--porcelain", "--", "airflow_provider_doitong")),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the short profile (under 5 minutes)")
    parser.add_argument("--json", type=Path, help="where to write the JSON (default: benchmarks/results/)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections to run, comma-separated")
    parser.add_argument("--prompts", type=int, help="batch size N")
    parser.add_argument("--time-scale", type=float, help="emulator time scale")
    parser.add_argument("--job-seconds", type=float, help="emulated seconds per job")
    parser.add_argument("--poll-interval", type=float, help="the operator's poll_interval (real seconds)")
    parser.add_argument("--waits", type=int, help="concurrent waits in the triggerer section")
    parser.add_argument("--repetitions", type=int, help="parse repetitions")
    parser.add_argument(
        "--sides",
        default="ours,baseline,batch,batch_deferrable",
        help="batch sides to run: ours (mapped), baseline (HTTP provider), batch, batch_deferrable",
    )
    parser.add_argument(
        "--no-second-night", action="store_true", help="run each batch side once (no next night's run)"
    )
    parser.add_argument("--batch-poll-interval", type=float, help="FluxBatchOperator's poll_interval")
    parser.add_argument("--scale-prompts", type=int, help="prompts of the scale section")
    parser.add_argument("--scale-time-scale", type=float, help="emulator time scale of the scale section")
    parser.add_argument(
        "--scale-job-seconds", type=float, help="emulated seconds per job in the scale section"
    )
    parser.add_argument(
        "--no-mapped-scale", action="store_true", help="skip the mapped form in the scale section"
    )
    parser.add_argument("--keep", type=Path, help="keep the batch's Airflow home and images here")
    parser.add_argument(
        "--scenarios",
        help="distributed scenarios, comma-separated: batch, worker_sigkill, triggerer_sigkill, budget, "
        "flux_batch, flux_batch_deferrable, flux_batch_worker_sigkill, flux_batch_triggerer_sigkill, "
        "shared_account, cache_concurrent",
    )
    parser.add_argument(
        "--cache-prompts", type=int, help="prompts of the distributed cache_concurrent scenario (default 20)"
    )
    parser.add_argument(
        "--throughput-scenarios",
        default=",".join(THROUGHPUT_SCENARIOS),
        help="throughput scenarios, comma-separated: " + ", ".join(THROUGHPUT_SCENARIOS),
    )
    parser.add_argument("--day-prompts", type=int, help="prompts of the throughput pro_day scenario")
    parser.add_argument("--day-time-scale", type=float, help="emulator time scale of the pro_day scenario")
    parser.add_argument("--day-job-seconds", type=float, help="emulated seconds per job of pro_day")
    parser.add_argument(
        "--enterprise-deadline", type=float, help="real seconds the enterprise scenario may take"
    )
    parser.add_argument("--render", type=Path, help="print the Markdown of an earlier JSON result and exit")
    return parser.parse_args(argv)


def _chosen(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _with(settings: Any, overrides: dict[str, Any]) -> Any:
    """``settings`` (a dataclass) with the overrides that were given (not ``None``)."""
    return type(settings)(**{**settings.__dict__, **{k: v for k, v in overrides.items() if v is not None}})


def _batch_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "prompts": args.prompts,
        "time_scale": args.time_scale,
        "job_seconds": args.job_seconds,
        "poll_interval": args.poll_interval,
        "batch_poll_interval": args.batch_poll_interval,
    }


def _run_sections(
    args: argparse.Namespace, profile: dict[str, Any], sections: list[str], say: Any
) -> dict[str, Any]:
    """Each section named, in order; a section not run is ``None``."""
    overrides = _batch_overrides(args)
    keep: Path | None = args.keep
    out: dict[str, Any] = dict.fromkeys(
        ("batch", "triggerer", "parse", "scale", "distributed", "shared_account", "throughput", "cache")
    )
    if "distributed" in sections:
        chosen: dict[str, Any] = {"scenarios": _chosen(args.scenarios)} if args.scenarios else {}
        if args.cache_prompts:
            chosen["cache_prompts"] = args.cache_prompts
        out["distributed"] = _run_distributed(
            {**profile["distributed"], **chosen}, overrides, keep=keep, say=say
        )
    if "parse" in sections:
        out["parse"] = run_parse(repetitions=args.repetitions or profile["parse_repetitions"], say=say)
    if "triggerer" in sections:
        out["triggerer"] = run_triggerer(_with(profile["triggerer"], {"waits": args.waits or None}), say=say)
    if "batch" in sections:
        out["batch"] = run_batch(
            _with(profile["batch"], overrides),
            say=say,
            keep=keep,
            sides=_chosen(args.sides),
            second_nights=not args.no_second_night,
        )
    if "scale" in sections:
        scale = {
            "prompts": args.scale_prompts,
            "time_scale": args.scale_time_scale,
            "job_seconds": args.scale_job_seconds,
        }
        out["scale"] = run_scale(
            _with(profile["scale"], scale),
            say=say,
            keep=keep / "scale" if keep else None,
            mapped=not args.no_mapped_scale,
        )
    if "shared_account" in sections:
        out["shared_account"] = {
            name: run_shared_account(
                SharedAccountSettings(batch_share=share),
                say=say,
                keep=keep / f"shared-{name}" if keep else None,
            )
            for name, share in SHARED_ACCOUNT_FORMS
        }
    if "throughput" in sections:
        day = {
            "prompts": args.day_prompts,
            "time_scale": args.day_time_scale,
            "job_seconds": args.day_job_seconds,
        }
        out["throughput"] = run_throughput(
            with_changes(profile["throughput"], day=day, enterprise_deadline_s=args.enterprise_deadline),
            scenarios=_chosen(args.throughput_scenarios),
            say=say,
            keep=keep / "throughput" if keep else None,
        )
    if "cache" in sections:
        out["cache"] = run_cache(CacheSettings(), say=say)
    return out


def _unknown(sections: list[str], throughput: tuple[str, ...]) -> str | None:
    """What an argument names that does not exist, if anything."""
    unknown = set(sections) - set(SECTIONS) - set(OPTIONAL_SECTIONS)
    if unknown:
        return f"unknown section(s): {', '.join(sorted(unknown))}"
    unknown_tp = set(throughput) - set(THROUGHPUT_SCENARIOS)
    if unknown_tp:
        return f"unknown throughput scenario(s): {', '.join(sorted(unknown_tp))}"
    return None


def _write(doc: dict[str, Any], json_path: Path, *, batch: dict[str, Any] | None) -> None:
    """The JSON, the Markdown beside it (and printed), and the plot of the batch section's run."""
    cache = doc.get("cache")
    if batch is not None:
        doc["meta"]["plot"] = str(plot_requests(batch, json_path.with_suffix(".png")))
    json_path.write_text(json.dumps(doc, indent=1, default=str))
    table = markdown(doc)
    if cache is not None:
        table += cache_markdown(cache)
    json_path.with_suffix(".md").write_text(table)
    print()
    print(table)
    print(f"JSON: {json_path}\nMarkdown: {json_path.with_suffix('.md')}")
    if "plot" in doc["meta"]:
        print(f"Plot: {doc['meta']['plot']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:
        doc = json.loads(args.render.read_text())
        doc["goals"] = evaluate_goals(doc)
        print(markdown(doc))
        return 0
    profile_name = "quick" if args.quick else "full"
    sections = list(_chosen(args.only))
    problem = _unknown(sections, _chosen(args.throughput_scenarios))
    if problem:
        print(problem, file=sys.stderr)
        return 2
    started = time.time()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    json_path = args.json or ROOT / "benchmarks" / "results" / f"bench-{profile_name}-{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)

    def say(message: str) -> None:
        print(f"[{time.time() - started:6.0f}s] {message}", flush=True)

    results = _run_sections(args, PROFILES[profile_name], sections, say)
    cache = results.pop("cache")
    meta = {
        "started": datetime.fromtimestamp(started, tz=timezone.utc).isoformat(timespec="seconds"),
        "profile": profile_name,
        "sections": sections,
        "cpus": os.cpu_count(),
        "duration_s": time.time() - started,
        "python": sys.version.split()[0],
        **git_state(),
    }
    doc = assemble(meta=meta, **results)
    if cache is not None:  # the image cache (benchmarks/cache.py)
        doc["cache"] = cache
    _write(doc, json_path, batch=results["batch"])
    return 0


def _run_distributed(
    profile: dict[str, Any], overrides: dict[str, float | None], *, keep: Path | None, say: Any
) -> dict[str, Any]:
    try:
        from benchmarks.distributed import DistributedSettings, run_distributed
    except ImportError as exc:
        raise SystemExit(
            f"{exc}: the distributed section needs its extra; run `python3 dev.py distributed`"
        ) from None
    values = {**profile, **{k: v for k, v in overrides.items() if v is not None}}
    return run_distributed(DistributedSettings(**values), say=say, keep=keep)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
