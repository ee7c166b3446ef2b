#!/usr/bin/env python3
"""Run the benchmarks: ``python benchmarks/run.py [--quick] [--json PATH] [--only batch,triggerer,parse]``.

``--only throughput`` runs the batch operator against what the plan allows (short jobs, the pro plan's
day, enterprise limits with a 100-ms round trip, a million-line prompts file).

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
PROFILES = {
    "quick": {
        "batch": BatchSettings(
            prompts=30,
            time_scale=0.25,
            job_seconds=64.0,
            poll_interval=3.2,
            batch_poll_interval=10.0,
            batch_min_defer=5.0,
        ),
        "scale": BatchSettings(
            prompts=1_200, time_scale=0.02, job_seconds=20.0, poll_interval=3.2, batch_poll_interval=2.0
        ),
        "triggerer": TriggererSettings(waits=1000, job_seconds=20.0, poll=2.0),
        "parse_repetitions": 7,
        "distributed": {"prompts": 20, "time_scale": 0.25, "job_seconds": 64.0, "poll_interval": 8.0},
        "throughput": throughput_profile(day_prompts=2_000, enterprise_deadline_s=300.0),
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
        "throughput": throughput_profile(day_prompts=10_000, enterprise_deadline_s=900.0),
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render:
        doc = json.loads(args.render.read_text())
        doc["goals"] = evaluate_goals(doc)
        print(markdown(doc))
        return 0
    profile_name = "quick" if args.quick else "full"
    profile = PROFILES[profile_name]
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS) - set(OPTIONAL_SECTIONS)
    if unknown:
        print(f"unknown section(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    chosen_tp = tuple(x.strip() for x in args.throughput_scenarios.split(",") if x.strip())
    unknown_tp = set(chosen_tp) - set(THROUGHPUT_SCENARIOS)
    if unknown_tp:
        print(f"unknown throughput scenario(s): {', '.join(sorted(unknown_tp))}", file=sys.stderr)
        return 2
    batch_settings: BatchSettings = profile["batch"]
    overrides = {
        "prompts": args.prompts,
        "time_scale": args.time_scale,
        "job_seconds": args.job_seconds,
        "poll_interval": args.poll_interval,
        "batch_poll_interval": args.batch_poll_interval,
    }
    batch_settings = BatchSettings(
        **{**batch_settings.__dict__, **{k: v for k, v in overrides.items() if v is not None}}
    )
    scale_settings: BatchSettings = profile["scale"]
    scale_overrides = {
        "prompts": args.scale_prompts,
        "time_scale": args.scale_time_scale,
        "job_seconds": args.scale_job_seconds,
    }
    scale_settings = BatchSettings(
        **{**scale_settings.__dict__, **{k: v for k, v in scale_overrides.items() if v is not None}}
    )
    trig_settings: TriggererSettings = profile["triggerer"]
    if args.waits:
        trig_settings = TriggererSettings(**{**trig_settings.__dict__, "waits": args.waits})
    repetitions = args.repetitions or profile["parse_repetitions"]

    started = time.time()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    json_path = args.json or ROOT / "benchmarks" / "results" / f"bench-{profile_name}-{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)

    def say(message: str) -> None:
        print(f"[{time.time() - started:6.0f}s] {message}", flush=True)

    batch = triggerer = parse = scale = distributed = shared_account = throughput = None
    if "distributed" in sections:
        chosen: dict[str, Any] = (
            {"scenarios": tuple(x.strip() for x in args.scenarios.split(",") if x.strip())}
            if args.scenarios
            else {}
        )
        if args.cache_prompts:
            chosen["cache_prompts"] = args.cache_prompts
        distributed = _run_distributed(
            {**profile["distributed"], **chosen}, overrides, keep=args.keep, say=say
        )
    if "parse" in sections:
        parse = run_parse(repetitions=repetitions, say=say)
    if "triggerer" in sections:
        triggerer = run_triggerer(trig_settings, say=say)
    if "batch" in sections:
        sides = tuple(side.strip() for side in args.sides.split(",") if side.strip())
        batch = run_batch(
            batch_settings, say=say, keep=args.keep, sides=sides, second_nights=not args.no_second_night
        )
    if "scale" in sections:
        scale = run_scale(
            scale_settings,
            say=say,
            keep=args.keep / "scale" if args.keep else None,
            mapped=not args.no_mapped_scale,
        )
    if "shared_account" in sections:
        shared_account = {
            name: run_shared_account(
                SharedAccountSettings(batch_share=share),
                say=say,
                keep=args.keep / f"shared-{name}" if args.keep else None,
            )
            for name, share in (("paced", None), ("pooled", 4))
        }
    if "throughput" in sections:
        day = {
            "prompts": args.day_prompts,
            "time_scale": args.day_time_scale,
            "job_seconds": args.day_job_seconds,
        }
        throughput = run_throughput(
            with_changes(profile["throughput"], day=day, enterprise_deadline_s=args.enterprise_deadline),
            scenarios=chosen_tp,
            say=say,
            keep=args.keep / "throughput" if args.keep else None,
        )
    # the image cache (benchmarks/cache.py)
    cache = run_cache(CacheSettings(), say=say) if "cache" in sections else None
    meta = {
        "started": datetime.fromtimestamp(started, tz=timezone.utc).isoformat(timespec="seconds"),
        "profile": profile_name,
        "sections": sections,
        "cpus": os.cpu_count(),
        "duration_s": time.time() - started,
        "python": sys.version.split()[0],
        **git_state(),
    }
    doc = assemble(
        meta=meta,
        batch=batch,
        triggerer=triggerer,
        parse=parse,
        scale=scale,
        distributed=distributed,
        shared_account=shared_account,
        throughput=throughput,
    )
    if cache is not None:  # the image cache (benchmarks/cache.py)
        doc["cache"] = cache
    if batch is not None:
        png = plot_requests(batch, json_path.with_suffix(".png"))
        doc["meta"]["plot"] = str(png)
    json_path.write_text(json.dumps(doc, indent=1, default=str))
    table = markdown(doc)
    if cache is not None:  # the image cache (benchmarks/cache.py)
        table += cache_markdown(cache)
    json_path.with_suffix(".md").write_text(table)
    print()
    print(table)
    print(f"JSON: {json_path}\nMarkdown: {json_path.with_suffix('.md')}")
    if batch is not None:
        print(f"Plot: {doc['meta']['plot']}")
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
