"""The image cache against the emulator: a month of a daily catalog, and two runs of the same prompts at once.

Both scenarios run ``FluxBatchOperator`` through Airflow's ``dag.test()`` (in-process Airflow, SQLite,
no scheduler), each Airflow in a process of its own with its own ``AIRFLOW_HOME``, against one
emulator (pro plan) that this process runs, and one cache folder shared by all:

- **month**: 30 daily runs of a catalog of ``daily_prompts`` prompts, ``repeat_share`` of each day's
  prompts (after the first) repeated from earlier days; the month is run once with the cache and once
  without (a fresh emulator each), and the credits charged compared. Every stored image of the cached
  month is checked: its SHA-256 against the image the emulator serves for its job id (an image
  names its job, so a wrong image cannot pass).
- **concurrent**: two processes, each one batch of the same ``concurrent_prompts`` prompts with the
  cache on, started together (after each has set up its Airflow): the emulator's log counts the
  jobs made.

``python benchmarks/run.py --only cache`` (keys ``cache.*``; table in ``benchmarks/README.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CacheSettings:
    """The two scenarios' sizes and the emulator's pace."""

    days: int = 30
    daily_prompts: int = 20
    repeat_share: float = 0.4
    concurrent_prompts: int = 50
    time_scale: float = 0.05
    job_seconds: float = 20.0
    size: int = 256
    seed: int = 21


def catalog(settings: CacheSettings) -> list[list[str]]:
    """Each day's prompts: the first day all new, then ``repeat_share`` of them from earlier days."""
    rng = random.Random(settings.seed)
    seen: list[str] = []
    days = []
    for day in range(settings.days):
        repeats = 0 if day == 0 else round(settings.daily_prompts * settings.repeat_share)
        prompts = rng.sample(seen, repeats) if repeats else []
        prompts += [
            f"catalog item {day:02d}-{n:02d}, studio light" for n in range(settings.daily_prompts - repeats)
        ]
        seen.extend(p for p in prompts if p not in seen)
        days.append(prompts)
    return days


def run_cache(settings: CacheSettings, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Both scenarios; the ``cache.*`` figures."""
    from doitong_emulator import DoitongEmulator

    work = Path(tempfile.mkdtemp(prefix="doitong-bench-cache-"))
    try:
        template = _migrated_home(work / "template", say)
        days = catalog(settings)
        month: dict[str, Any] = {}
        for side in ("with_cache", "without_cache"):
            with DoitongEmulator(
                plan="pro",
                time_scale=settings.time_scale,
                job_seconds=settings.job_seconds,
                credits=10_000_000,
            ) as emu:
                say(f"cache: a month of {settings.days} daily runs, {side.replace('_', ' ')}")
                started = time.monotonic()
                cache = str(work / side / "cache") if side == "with_cache" else None
                runs = _worker(template, work / side, emu, cache=cache, days=days, size=settings.size)
                month[side] = _month_figures(
                    runs, emu, time.monotonic() - started, verify=side == "with_cache"
                )
        concurrent = _concurrent(template, work / "concurrent", settings, say)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    with_cache, without = month["with_cache"], month["without_cache"]
    return {
        "settings": asdict(settings),
        "how": "FluxBatchOperator via dag.test() (in-process Airflow, one process per run group), emulator pro plan",
        "month": {
            **{f"{side}.{key}": value for side, figures in month.items() for key, value in figures.items()},
            "credits_saved_share": round(1 - with_cache["credits"] / without["credits"], 3)
            if without["credits"]
            else None,
        },
        "concurrent": concurrent,
    }


def _month_figures(runs: list[dict[str, Any]], emu: Any, seconds: float, *, verify: bool) -> dict[str, Any]:
    items = sum(run["items"] for run in runs)
    figures = {
        "runs": len(runs),
        "items": items,
        "credits": sum(run["credits_spent"] for run in runs),
        "account_credits_used": 10_000_000 - emu.credits(),
        "jobs": sum(emu.stats()["submissions_by_prompt"].values()),
        "cached_items": sum(run["cached"] for run in runs),
        "stored": sum(run["stored"] for run in runs),
        "seconds": round(seconds, 1),
    }
    if verify:
        figures["images_verified"], figures["images_wrong"] = _verify(runs, emu)
    return figures


def _verify(runs: list[dict[str, Any]], emu: Any) -> tuple[int, int]:
    """Every stored image's SHA-256 against the emulator's image of its job."""
    from airflow_provider_doitong.client import DoitongClient

    verified = wrong = 0
    served: dict[str, str] = {}
    with DoitongClient(base_url=emu.base_url, api_key=emu.api_key) as client:
        for run in runs:
            folder = Path(run["folder"])
            for entry in json.loads((folder / "manifest.json").read_text())["items"]:
                job_id = entry["job_id"]
                if job_id not in served:
                    job = client.get_job(job_id)
                    served[job_id] = (
                        hashlib.sha256(client.download(job.url)).hexdigest() if job and job.url else ""
                    )
                data = (folder / entry["file"]).read_bytes()
                ok = hashlib.sha256(data).hexdigest() == served[job_id] == entry["sha256"]
                verified, wrong = verified + ok, wrong + (not ok)
    return verified, wrong


def _concurrent(
    template: Path, work: Path, settings: CacheSettings, say: Callable[[str], None]
) -> dict[str, Any]:
    from doitong_emulator import DoitongEmulator

    prompts = [f"a shelf of ceramics, view {n:02d}" for n in range(settings.concurrent_prompts)]
    say(f"cache: two runs of the same {len(prompts)} prompts at once")
    with DoitongEmulator(
        plan="pro", time_scale=settings.time_scale, job_seconds=settings.job_seconds, credits=10_000_000
    ) as emu:
        start_at = time.time() + 30.0  # each process sets up its Airflow first
        procs = [
            _start_worker(
                template,
                work / name,
                emu,
                cache=str(work / "cache"),
                days=[prompts],
                size=settings.size,
                start_at=start_at,
            )
            for name in ("one", "two")
        ]
        runs = [_finish_worker(proc)[0] for proc in procs]
        jobs = sum(emu.stats()["submissions_by_prompt"].values())
        posts = sum(1 for entry in emu.request_log() if entry["kind"] == "submit")
    return {
        "prompts": len(prompts),
        "jobs": jobs,
        "submissions": posts,
        "stored": [run["stored"] for run in runs],
        "cached": [run["cached"] for run in runs],
        "credits": [run["credits_spent"] for run in runs],
        "seconds": [run["seconds"] for run in runs],
    }


def _migrated_home(home: Path, say: Callable[[str], None]) -> Path:
    say("cache: migrating an Airflow database for the runs")
    (home / "dags").mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        env=_env(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    return home


def _env(home: Path, emu: Any = None) -> dict[str, str]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "DOITONG_TEST_AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "emulator"), os.environ.get("PYTHONPATH", "")]),
    }
    if emu is not None:  # (set by the worker: importing the tests' set-up clears it)
        conn = {"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key}
        env["DOITONG_BENCH_CONN"] = json.dumps(conn)
    return env


def _worker(template: Path, work: Path, emu: Any, **job: Any) -> list[dict[str, Any]]:
    return _finish_worker(_start_worker(template, work, emu, **job))


def _start_worker(template: Path, work: Path, emu: Any, **job: Any) -> subprocess.Popen[str]:
    home = work / "airflow"
    (home / "dags").mkdir(parents=True)
    shutil.copyfile(template / "airflow.db", home / "airflow.db")
    spec = work / "job.json"
    spec.write_text(json.dumps({**job, "out": str(work / "out")}))
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.cache", str(spec)],
        cwd=ROOT,
        env=_env(home, emu),
        stdout=subprocess.PIPE,
        stderr=open(work / "worker.log", "w"),  # noqa: SIM115 (the child's, closed with it)
        text=True,
    )


def _finish_worker(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    out, _ = proc.communicate(timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"a cache benchmark worker failed ({proc.returncode}); see its worker.log")
    result: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
    return result


def _worker_main(spec_path: str) -> None:
    """In the worker process: one ``dag.test()`` batch per day, a line of JSON with each run's figures."""
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_doitong.operators.batch import FluxBatchOperator
    from tests.conftest import run_dag, task_states, xcom_value

    os.environ["AIRFLOW_CONN_DOITONG_DEFAULT"] = os.environ["DOITONG_BENCH_CONN"]
    spec = json.loads(Path(spec_path).read_text())
    if spec.get("start_at"):
        time.sleep(max(0.0, spec["start_at"] - time.time()))
    results = []
    for day, prompts in enumerate(spec["days"]):
        folder = Path(spec["out"]) / f"day-{day:02d}"
        with DAG(
            f"catalog_{day:02d}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False
        ) as dag:
            FluxBatchOperator(
                task_id="batch",
                prompts=prompts,
                output_path=str(folder),
                width=spec["size"],
                height=spec["size"],
                poll_interval=0.5,
                **({"cache_path": spec["cache"]} if spec["cache"] else {}),
            )
        started = time.monotonic()
        run = run_dag(dag)
        summary: Any = xcom_value(run, "batch")
        manifest = json.loads((folder / "manifest.json").read_text())
        results.append(
            {
                "state": task_states(run)["batch"],
                "folder": str(folder),
                "items": summary["items"],
                "stored": summary["stored"],
                "credits_spent": summary["credits_spent"],
                "cached": sum(1 for entry in manifest["items"] if entry.get("cached")),
                "seconds": round(time.monotonic() - started, 2),
            }
        )
    print(json.dumps(results), flush=True)


def cache_markdown(doc: dict[str, Any]) -> str:
    """The ``cache`` section as Markdown tables."""
    m, c = doc["month"], doc["concurrent"]
    s = doc["settings"]
    rows = [
        "",
        f"## Image cache ({s['days']} daily runs of {s['daily_prompts']} prompts, {s['repeat_share']:.0%} repeated)",
        "",
        "| | with the cache | without |",
        "|---|---|---|",
        f"| credits charged | {m['with_cache.credits']} | {m['without_cache.credits']} |",
        f"| jobs made | {m['with_cache.jobs']} | {m['without_cache.jobs']} |",
        f"| items from the cache | {m['with_cache.cached_items']} | 0 |",
        f"| images stored | {m['with_cache.stored']} | {m['without_cache.stored']} |",
        f"| images verified / wrong | {m['with_cache.images_verified']} / {m['with_cache.images_wrong']} | |",
        f"| credits saved | {m['credits_saved_share']:.1%} | |",
        "",
        f"Two runs of the same {c['prompts']} prompts at once: {c['jobs']} jobs in all "
        f"(stored {c['stored']}, from the cache {c['cached']}, credits {c['credits']}).",
        "",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    _worker_main(sys.argv[1])
