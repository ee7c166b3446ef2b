"""A million-line prompts file: the time and peak memory of checking it before the first credit, and
of a resume.

``run_prompts_file()`` writes a prompts file of realistic prompts (a plain ``.txt`` file, and a
``.jsonl`` file of items with their own options) and runs, each in a fresh Python process so that
its peak resident memory is the task's alone (``os.wait4`` gives the child's own ``ru_maxrss``):

* **validate**: what ``FluxBatchOperator.execute`` does before it can spend a credit: the items
  read and checked (:func:`~airflow_provider_doitong.operators.inputs.batch_item_list`, the same
  call the operator makes), the connection's secrets looked for in every prompt, the estimate
  checked against ``max_credits``, the ledger opened, the batch's runner built, what is still to
  buy estimated, the checked items saved and the ledger written;
* **resume**: what ``execute_complete`` does after a deferral before it goes on: the ledger and
  the items read back (:func:`~airflow_provider_doitong.operators.batch_task.resume`), the runner
  built;
* **manifest**: a resume, then ``manifest.json`` and ``index.html`` written as the task writes them
  when the batch ends (:func:`~airflow_provider_doitong.operators.batch_task.write_manifest`).

Each probe reports its wall time once the operator's module is imported (``imports_s``, Airflow's
own start, apart), the peak RSS of its whole process (imports included: ``imports_rss_mb`` of it
is there before the first line is read), and the CPU seconds of the whole process (``*_cpu_s``:
on a machine shared with other work, steadier than the wall time). ``python benchmarks/prompts_file.py
[--lines N] [--repeat N]`` prints the figures as JSON (with ``--repeat``, each file's check run N
times and the median run's figures given).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SUBJECTS = (
    "a red fox",
    "an old lighthouse keeper",
    "a tram in the rain",
    "a glass greenhouse",
    "two cyclists",
    "a paper crane",
    "a fishing village",
    "a snow leopard",
    "a street market",
    "a violin maker's workshop",
)
SCENES = (
    "at dawn, soft golden light, mist over the water",
    "under a violet evening sky, long shadows, 35mm film grain",
    "in heavy snow, muted colours, wide angle",
    "seen from above, bright midday sun, high detail",
    "by candlelight, warm tones, shallow depth of field",
    "in the style of a 1960s travel poster",
)
#: The connection's secrets the probe looks for in every prompt (as the operator does).
SECRETS = ("dtk_live_5c1f0a9e77b24d6b8e3f", "hunter2-password")


def _prompt(rng: random.Random, number: int) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(SCENES)}, variation {number}"


def write_prompts(path: Path, *, lines: int, jsonl: bool, seed: int = 7) -> int:
    """A prompts file of ``lines`` lines (every 50th a ``#`` comment, every 97th blank); a ``.jsonl``
    file's items set their own size or quality now and then. :return: its size in bytes."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out:
        for number in range(1, lines + 1):
            if number % 50 == 0:
                out.write(f"# section {number // 50}\n")
            elif number % 97 == 0:
                out.write("\n")
            elif not jsonl:
                out.write(_prompt(rng, number) + "\n")
            else:
                item: dict[str, Any] = {"prompt": _prompt(rng, number)}
                if number % 3 == 0:
                    item["width"] = 768
                if number % 7 == 0:
                    item["quality"] = "high"
                out.write(json.dumps(item) + "\n")
    return path.stat().st_size


# --- the probe (the child process) ----------------------------------------------------------------
def _context() -> dict[str, Any]:
    from types import SimpleNamespace

    ti = SimpleNamespace(dag_id="bench", run_id="r1", task_id="batch", map_index=-1, try_number=1)
    return {"ti": ti}


def _runner(folder: Any, ledger: Any, found: Any) -> Any:
    """The batch's runner, built as the operator builds it (its client never called)."""
    from airflow_provider_doitong.batch.planner import Limits, Planner
    from airflow_provider_doitong.batch.runner import BatchRunner
    from airflow_provider_doitong.client import DoitongClient, contract

    plan = contract.PLANS["pro"]
    planner = Planner(
        limits=Limits(
            concurrency=plan.concurrent_jobs,
            requests_per_window=plan.requests_per_minute,
            window_s=contract.RATE_LIMIT_WINDOW_SECONDS,
        ),
        poll_interval=10.0,
    )
    client = DoitongClient(api_key="dtk_bench", base_url="http://127.0.0.1:9")
    return BatchRunner(
        items=found,
        ledger=ledger,
        client=client,
        planner=planner,
        folder=folder,
        item_retries=2,
        max_failed_items=0,
    )


def _operator(prompts_file: str, output: str) -> Any:
    from airflow_provider_doitong.operators.batch import FluxBatchOperator

    return FluxBatchOperator(task_id="batch", prompts_file=prompts_file, output_path=output)


def probe_validate(prompts_file: str, output: str) -> dict[str, Any]:
    """``execute`` up to its first request: the operator's own calls, in its order."""
    from airflow_provider_doitong.batch import items as batch_items
    from airflow_provider_doitong.batch.ledger import ItemState
    from airflow_provider_doitong.operators import batch_task

    operator, context = _operator(prompts_file, output), _context()
    found = operator._items()
    problem = batch_items.secret_items_problem(found, SECRETS, conn_id="doitong_default")
    assert problem is None, problem
    estimate = batch_items.estimated_credits(found)
    problem = batch_items.budget_problem(
        images=len(found), estimate=estimate, to_spend=0, balance=None, max_credits=None
    )
    assert problem is None, problem
    folder, ledger = batch_task.open_ledger(context, output, found)
    runner = _runner(folder, ledger, found)
    to_spend = batch_items.estimated_credits(found, only=ledger.in_state(ItemState.PENDING))
    batch_task.save_items(context, folder, ledger, found)
    ledger.set_meta(credits_estimated=estimate)
    with batch_task.no_collection():
        ledger.flush()
    ledger.close()
    runner.client.close()
    return {"items": len(found), "credits": to_spend}


def probe_resume(prompts_file: str, output: str) -> dict[str, Any]:
    """``execute_complete`` up to its first request: the ledger and the items read back."""
    from airflow_provider_doitong.operators import batch_task

    operator, context = _operator(prompts_file, output), _context()
    folder, ledger, found = batch_task.resume(context, output, operator._items)
    runner = _runner(folder, ledger, found)
    ledger.close()
    runner.client.close()
    return {"items": len(found)}


def _rss_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def probe_manifest(prompts_file: str, output: str) -> dict[str, Any]:
    """A resume, then the batch's manifest and contact sheet written as the task writes them at its
    end (every item still pending: the entries a finished batch lists, a little shorter)."""
    from airflow_provider_doitong.operators import batch_task

    operator, context = _operator(prompts_file, output), _context()
    folder, ledger, found = batch_task.resume(context, output, operator._items)
    runner = _runner(folder, ledger, found)
    started = time.perf_counter()
    before = _rss_mb()
    summary = batch_task.write_manifest(context, runner, found, secrets=SECRETS)
    ledger.close()
    runner.client.close()
    return {"items": summary["items"], "write_s": time.perf_counter() - started, "before_rss_mb": before}


def _probe_main(argv: list[str]) -> None:
    kind, prompts_file, output = argv
    started = time.perf_counter()
    import airflow_provider_doitong.batch.runner
    import airflow_provider_doitong.operators.batch  # noqa: F401  (Airflow's own imports, timed apart)

    imported = time.perf_counter()
    baseline = _rss_mb()
    probe = {"validate": probe_validate, "resume": probe_resume, "manifest": probe_manifest}[kind]
    result = probe(prompts_file, output)
    result["seconds"] = time.perf_counter() - imported
    result["imports_s"] = imported - started
    result["imports_rss_mb"] = round(baseline, 1)
    print(json.dumps(result))


# --- the parent ---------------------------------------------------------------------------------------
def _run_probe(kind: str, prompts_file: Path, output: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
    }
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--probe", kind, str(prompts_file), str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    out, err = child.stdout.read(), child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if child.returncode != 0:
        raise RuntimeError(f"the {kind} probe failed ({child.returncode}): {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # kilobytes on Linux
    result["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 2)  # imports included
    result["process_s"] = round(wall, 2)
    return result


def _validate(path: Path, output: Path, say: Callable[[str], None], repeat: int) -> dict[str, Any]:
    """The validate probe ``repeat`` times (a fresh output folder each): the run of median time,
    with every run's time, CPU and peak under ``runs``."""
    runs = []
    for number in range(repeat):
        shutil.rmtree(output, ignore_errors=True)
        run = _run_probe("validate", path, output)
        say(
            f"  validate {path.name}: {run['seconds']:.2f}s ({run['cpu_s']:.1f}s CPU), "
            f"peak {run['peak_rss_mb']:.0f} MB" + (f" (run {number + 1} of {repeat})" if repeat > 1 else "")
        )
        runs.append(run)
    chosen = sorted(runs, key=lambda run: run["seconds"])[(len(runs) - 1) // 2]
    return {**chosen, "runs": [[round(r["seconds"], 2), r["cpu_s"], r["peak_rss_mb"]] for r in runs]}


def _measure(path: Path, work: Path, say: Callable[[str], None], repeat: int = 1) -> dict[str, Any]:
    output = work / f"out-{path.suffix.lstrip('.')}"
    first = _validate(path, output, say, repeat)
    again = _run_probe("resume", path, output)
    say(
        f"  resume   {path.name}: {again['seconds']:.2f}s ({again['cpu_s']:.1f}s CPU), "
        f"peak {again['peak_rss_mb']:.0f} MB"
    )
    written = _run_probe("manifest", path, output)
    say(
        f"  manifest {path.name}: {written['write_s']:.2f}s, peak {written['peak_rss_mb']:.0f} MB "
        f"({written['before_rss_mb']:.0f} MB before it)"
    )
    return {
        "items": first["items"],
        "validate_s": round(first["seconds"], 2),
        "peak_rss_mb": first["peak_rss_mb"],
        "validate_process_s": first["process_s"],
        "validate_cpu_s": first["cpu_s"],
        "imports_s": round(first["imports_s"], 2),
        "imports_rss_mb": first["imports_rss_mb"],
        "resume_s": round(again["seconds"], 2),
        "resume_peak_rss_mb": again["peak_rss_mb"],
        "resume_process_s": again["process_s"],
        "resume_cpu_s": again["cpu_s"],
        "manifest_s": round(written["write_s"], 2),
        "manifest_peak_rss_mb": written["peak_rss_mb"],
        "manifest_before_rss_mb": round(written["before_rss_mb"], 1),
        **({"validate_runs": first["runs"]} if repeat > 1 else {}),
    }


def run_prompts_file(
    *, lines: int = 1_000_000, say: Callable[[str], None] = print, repeat: int = 1
) -> dict[str, Any]:
    """Write a ``lines``-line prompts file (and a ``.jsonl`` one) and measure checking it, and a resume.

    :param repeat: how many times each file's check runs (on a shared machine, the median run is
        reported, with ``validate_runs``: each run's seconds, CPU seconds and peak RSS).
    :return: ``lines``, ``file_mb``, ``validate_s``, ``peak_rss_mb``, ``resume_s``,
        ``resume_peak_rss_mb``, ``manifest_s``, ``manifest_peak_rss_mb`` (the plain file), and the
        same under ``jsonl``; the ``*_process_s`` keys add the interpreter's start-up and imports.
    """
    work = Path(tempfile.mkdtemp(prefix="doitong-prompts-file-"))
    try:
        plain, items = work / "prompts.txt", work / "prompts.jsonl"
        say(f"prompts file: writing {lines:,} lines")
        size = write_prompts(plain, lines=lines, jsonl=False)
        jsonl_size = write_prompts(items, lines=lines, jsonl=True)
        result: dict[str, Any] = {"lines": lines, "file_mb": round(size / 2**20, 1)}
        result.update(_measure(plain, work, say, repeat))
        result["jsonl"] = {"file_mb": round(jsonl_size / 2**20, 1), **_measure(items, work, say, repeat)}
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--probe"]:
        _probe_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each check; the median reported")
    args = parser.parse_args(argv)
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    print(json.dumps(run_prompts_file(lines=args.lines, say=say, repeat=max(1, args.repeat)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
