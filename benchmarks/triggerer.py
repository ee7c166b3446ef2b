"""The triggerer benchmark: 1,000 concurrent waits in one process, ``DoitongJobTrigger`` against ``HttpSensorTrigger``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from doitong_emulator import UNLIMITED, DoitongEmulator
from doitong_emulator.jobs import JobRequest

ROOT = Path(__file__).resolve().parent.parent
HTTP_CONN_ID = "doitong_http"


@dataclass(frozen=True)
class TriggererSettings:
    """One triggerer comparison.

    :param waits: concurrent waits (one job each).
    :param job_seconds: how long each job runs, in real seconds (spread by 10%).
    :param poll: the poll interval of both triggers, seconds (the vendor page's 2 s).
    """

    waits: int = 1000
    job_seconds: float = 60.0
    poll: float = 2.0


def _submit_jobs(emu: DoitongEmulator, count: int) -> list[str]:
    account = emu.state.accounts[0]
    ids = []
    for n in range(count):
        request = JobRequest(
            provider="flux-krea",
            prompt=f"wait {n}",
            width=256,
            height=256,
            quality="standard",
            webhook_url=None,
        )
        ids.append(emu.state.submit(account, request).id)
    return ids


class _Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak_rss = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            except psutil.Error:
                return


def _http_connection(emu: DoitongEmulator) -> str:
    """The HTTP provider's connection to the emulator, as an ``AIRFLOW_CONN_*`` value."""
    extra = {"X-API-Key": emu.api_key}
    return json.dumps(
        {"conn_type": "http", "host": "127.0.0.1", "port": emu.port, "schema": "http", "extra": extra}
    )


def _environment(emu: DoitongEmulator, work: Path) -> dict[str, str]:
    """The load process's environment: its Airflow home and the two providers' connections."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW_CONN_DOITONG_DEFAULT": json.dumps(
            {"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key}
        ),
        f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": _http_connection(emu),
        "PYTHONPATH": str(ROOT),
    }


def _load(
    kind: str, settings: TriggererSettings, emu: DoitongEmulator, work: Path, say: Callable[[str], None]
) -> tuple[dict[str, Any], float]:
    """Run the load process for ``kind`` until its waits are over: its result, and its peak RSS
    as sampled from outside (bytes)."""
    result_file, ids_file, log_file = (work / f"{kind}{end}" for end in (".json", "-ids.json", ".log"))
    max_seconds = settings.job_seconds * 3 + 60
    command = [sys.executable, "-m", "benchmarks.trigger_load", "--kind", kind, "--poll", str(settings.poll)]
    command += ["--max-seconds", str(max_seconds), "--conn-id", HTTP_CONN_ID, "--result", str(result_file)]
    with open(log_file, "wb") as log:
        child = subprocess.Popen(
            command,
            cwd=ROOT,
            env=_environment(emu, work),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        sampler = _Sampler(child.pid)
        sampler.start()
        line = child.stdout.readline()
        if not line.startswith("IMPORTED"):
            child.kill()
            raise RuntimeError(f"trigger load ({kind}) did not start; see {log_file}")
        drain = threading.Thread(target=_copy, args=(child.stdout, log), daemon=True)
        drain.start()
        ids_file.write_text(json.dumps(_submit_jobs(emu, settings.waits)))
        child.stdin.write(f"{ids_file}\n")
        child.stdin.flush()
        say(f"triggerer/{kind}: {settings.waits} waits started")
        try:
            rc = child.wait(timeout=max_seconds + 120)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            sampler.stop.set()
            drain.join(timeout=10)
        if rc != 0:
            raise RuntimeError(f"trigger load ({kind}) exited with {rc}; see {log_file}")
    return json.loads(result_file.read_text()), sampler.peak_rss


def _one(kind: str, settings: TriggererSettings, work: Path, say: Callable[[str], None]) -> dict[str, Any]:
    emu = DoitongEmulator(
        plan="pro",
        time_scale=1.0,
        job_seconds=settings.job_seconds,
        job_seconds_spread=settings.job_seconds * 0.1,
        credits=10**9,
        seed=11,
        requests_per_minute=UNLIMITED,
        concurrent_jobs=UNLIMITED,
        daily_limit=UNLIMITED,
    )
    with emu:
        result, peak_rss = _load(kind, settings, emu, work, say)
        log_entries = emu.request_log()
        window = [e for e in log_entries if result["started_at"] <= e["t"] <= result["finished_at"]]
        minutes = max(result["wall_s"], 1e-9) / 60
        result.update(
            {
                "sampled_peak_rss_mb": peak_rss / 2**20,
                "requests": len(window),
                "requests_per_minute": len(window) / minutes,
                "responses_by_status": _count(str(e["status"]) for e in window),
                "cpu_s_per_minute": result["cpu_during_waits_s"] / minutes,
            }
        )
    say(
        f"triggerer/{kind}: peak RSS {result['peak_rss_mb']:.0f} MB, CPU {result['cpu_during_waits_s']:.1f}s, "
        f"{result['requests_per_minute']:.0f} req/min, max loop lag {result['loop_lag_max_s']:.3f}s"
    )
    return result


def _copy(source: Any, sink: Any) -> None:
    for line in source:
        sink.write(line.encode(errors="replace"))


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def http_sensor_trigger_on_job_endpoint(work: Path) -> dict[str, Any]:
    """How soon ``HttpSensorTrigger`` fires on ``/v1/jobs/{id}`` of a job that is still processing."""
    with DoitongEmulator(plan="pro", time_scale=1.0, job_seconds=60, credits=10**6) as emu:
        (job_id,) = _submit_jobs(emu, 1)
        code = (
            "import asyncio, time\n"
            "from airflow.providers.http.triggers.http import HttpSensorTrigger\n"
            "async def main():\n"
            f"    t = HttpSensorTrigger(endpoint='v1/jobs/{job_id}', http_conn_id='{HTTP_CONN_ID}', poke_interval=2)\n"
            "    start = time.monotonic()\n"
            "    async for event in t.run():\n"
            "        print(time.monotonic() - start, event.payload)\n"
            "        return\n"
            "asyncio.run(main())\n"
        )
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(work / "airflow"),
            f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": _http_connection(emu),
        }
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True
        ).stdout.split()
        status = (emu.job(job_id) or {}).get("status")
    return {"fired_after_s": float(out[0]), "payload": out[1], "job_status_when_fired": status}


def run_triggerer(settings: TriggererSettings, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Both kinds, one after the other, each with its own emulator (request limits lifted)."""
    with tempfile.TemporaryDirectory(prefix="doitong-triggerer-") as tmp:
        work = Path(tmp)
        ours = _one("doitong", settings, work, say)
        time.sleep(2)
        http = _one("http", settings, work, say)
        on_job_endpoint = http_sensor_trigger_on_job_endpoint(work)
    return {
        "settings": {
            **asdict(settings),
            "emulator_limits": "requests/minute, concurrent jobs, daily: unlimited",
        },
        "ours": ours,
        "http_sensor_trigger": http,
        "http_sensor_trigger_on_job_endpoint": on_job_endpoint,
    }
