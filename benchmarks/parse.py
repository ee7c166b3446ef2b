"""The parse benchmark: what importing the operator (and each example DAG) adds to a DAG file's parse."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "example_dags"

BASELINE_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    import pendulum

    from airflow.sdk import DAG, task

    with DAG("parse_baseline", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False):

        @task
        def hello():
            return "hello"

        hello()
    """
)

OPERATOR_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    import pendulum

    from airflow.sdk import DAG, task
    from airflow_provider_doitong.operators.flux import FluxGenerateOperator

    with DAG("parse_operator", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False):

        @task
        def hello():
            return "hello"

        hello() >> FluxGenerateOperator(task_id="generate", prompt="a lighthouse at dawn", deferrable=True)
    """
)


def _ignored(folder: Path) -> list[re.Pattern[str]]:
    ignore = folder / ".airflowignore"
    if not ignore.exists():
        return []
    lines = [line.split("#", 1)[0].strip() for line in ignore.read_text().splitlines()]
    return [re.compile(line) for line in lines if line]


def _is_dag_file(path: Path, ignored: list[re.Pattern[str]]) -> bool:
    if any(pattern.search(path.name) for pattern in ignored):
        return False
    text = path.read_text(errors="replace").lower()
    return "airflow" in text and "dag" in text


def _probe(paths: list[Path], repetitions: int, env: dict[str, str]) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.parse_probe", "--repetitions", str(repetitions), *map(str, paths)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 and not rows:
        raise RuntimeError(f"parse probe failed: {out.stderr[-2000:]}")
    return rows


def cold_imports(repetitions: int, env: dict[str, str]) -> dict[str, Any]:
    """Whole fresh interpreters: ``import airflow.sdk`` alone and with the operator module, wall ms."""
    cases = {
        "airflow.sdk": "import airflow.sdk",
        "airflow.sdk + operator": "import airflow.sdk, airflow_provider_doitong.operators.flux",
    }
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repetitions):
        for name, code in cases.items():
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=300)
            samples[name].append((time.perf_counter() - started) * 1000)
    medians = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "repetitions": repetitions,
        "wall_ms_median": medians,
        "operator_added_ms": medians["airflow.sdk + operator"] - medians["airflow.sdk"],
    }


def import_breakdown(env: dict[str, str], top: int = 10) -> list[dict[str, Any]]:
    """The operator module's own imports (beyond what the processor has loaded), slowest first."""
    code = (
        "import sys\nimport airflow.sdk\nfrom airflow.dag_processing.dagbag import DagBag\n"
        "sys.stderr.write('MARK\\n'); sys.stderr.flush()\nimport airflow_provider_doitong.operators.flux\n"
    )
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = out.stderr.split("MARK\n", 1)[-1].splitlines()
    rows = []
    for line in lines:
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(3)) <= 5:
            depth = (len(match.group(3)) - 1) // 2
            rows.append(
                {"module": match.group(4), "depth": depth, "cumulative_ms": int(match.group(2)) / 1000}
            )
    return sorted(rows, key=lambda r: r["cumulative_ms"], reverse=True)[:top]


def run_parse(*, repetitions: int, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Parse each file ``repetitions`` times, each in a fresh fork, interleaved; report medians."""
    with tempfile.TemporaryDirectory(prefix="doitong-parse-") as tmp:
        work = Path(tmp)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PYTHONPATH": str(ROOT),
        }
        files: dict[str, Path] = {}
        for name, text in (
            ("baseline (airflow.sdk only)", BASELINE_FILE),
            ("operator module", OPERATOR_FILE),
        ):
            path = work / f"{name.split()[0]}.py"
            path.write_text(text)
            files[name] = path
        if EXAMPLES.is_dir():
            ignored = _ignored(EXAMPLES)
            for path in sorted(EXAMPLES.glob("*.py")):
                if _is_dag_file(path, ignored):
                    files[f"example_dags/{path.name}"] = path
        names = list(files)
        say(f"parse: {len(names)} files x {repetitions} forked parses")
        rows = _probe([files[n] for n in names], repetitions, env)
        by_path = {str(files[n]): n for n in names}
        samples: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for row in rows:
            samples[by_path[row["file"]]].append(row)
        breakdown = import_breakdown(env)
        say("parse: cold interpreters")
        cold = cold_imports(max(2, repetitions // 3), env)
    base = _median(samples["baseline (airflow.sdk only)"], "parse_ms")
    results: dict[str, Any] = {}
    for name, runs in samples.items():
        ok = [r for r in runs if "error" not in r]
        median = _median(ok, "parse_ms")
        results[name] = {
            "parse_ms_median": median,
            "parse_ms_min": min((r["parse_ms"] for r in ok), default=None),
            "added_ms": (median - base) if median is not None and base is not None else None,
            "modules_added": ok[0]["modules_added"] if ok else None,
            "dag_ids": ok[0]["dag_ids"] if ok else [],
            "import_errors": sorted({e for r in ok for e in r.get("errors", [])}),
            "failed_runs": repetitions - len(ok),
            "failure": next((r["error"] for r in runs if "error" in r), None),
        }
    return {
        "repetitions": repetitions,
        "method": "a fresh fork per parse of a process with airflow.sdk and the DagBag loaded (as the DAG "
        "processor does); DagBag.process_file(file) timed",
        "files": results,
        "operator_added_ms": results["operator module"]["added_ms"],
        "operator_import_breakdown": breakdown,
        "cold_interpreter": cold,
    }


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if key in r]
    return statistics.median(values) if values else None
