"""The batch on a distributed Airflow: CeleryExecutor on Redis, PostgreSQL, two workers, two triggerers, S3.

Every component is its own process (:class:`~tests.support.distributed_cluster.DistributedCluster`);
Redis, PostgreSQL and moto's S3 server run as this machine's processes on loopback
(:mod:`tests.support.services`), and the emulator (pro plan) in this process. Each scenario is one
DAG run of the same prompts against the emulator, reset in between:

* ``batch``: nothing breaks;
* ``worker_sigkill``: a Celery worker (its whole process group) is SIGKILLed while it runs tasks,
  mid-batch, and started again;
* ``triggerer_sigkill``: once both triggerers hold waits, one is SIGKILLed; the other takes its
  waits over (after ``triggerer_health_check_threshold``), then the killed one is started again;
* ``budget``: the batch with ``poll_interval=0.25`` s, so both triggerers' pollers want far more
  than the plan's requests a minute: what they and the workers' submissions do to the budget.
"""

from __future__ import annotations

import json
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airflow_provider_doitong.contract import PLANS
from benchmarks.batch import BatchSettings, make_prompts
from benchmarks.distributed_checks import collect, secrets_in_logs
from benchmarks.distributed_dags import (
    BUCKET,
    EAGER_DAG_ID,
    EAGER_POLL_INTERVAL,
    MAPPED_DAG_ID,
    mapped_dag,
    output_url,
)
from doitong_emulator import DoitongEmulator
from tests.support.airflow_cluster import unix_time
from tests.support.distributed_cluster import DistributedCluster
from tests.support.services import Postgres, Redis, S3Server, ensure_system_packages

SCENARIOS = ("batch", "worker_sigkill", "triggerer_sigkill", "budget")
#: Scenarios whose DAG is not the mapped one with the profile's poll_interval.
SCENARIO_DAGS = {"budget": EAGER_DAG_ID}


@dataclass(frozen=True)
class DistributedSettings(BatchSettings):
    """The distributed run: the batch's settings plus the cluster's shape.

    :param workers: Celery workers.
    :param worker_concurrency: task slots per worker.
    :param triggerers: triggerer processes.
    :param scenarios: which scenarios to run, in order.
    """

    workers: int = 2
    worker_concurrency: int = 8
    triggerers: int = 2
    scenarios: tuple[str, ...] = SCENARIOS


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out waiting for {what}")


def emu_concurrency(emu: DoitongEmulator) -> int:
    return int(PLANS[emu.accounts[0].plan].concurrent_jobs)


def _submitted(emu: DoitongEmulator) -> int:
    return sum(emu.stats()["submissions_by_prompt"].values())


def kill_worker(cluster: DistributedCluster, emu: DoitongEmulator, prompts: list[str]) -> dict[str, Any]:
    """Once the second wave is being submitted, SIGKILL a worker that is running tasks; restart it 5 s later."""
    second_wave = min(len(prompts), emu_concurrency(emu) + 1)
    wait_until(lambda: _submitted(emu) >= second_wave, 600, "the second wave's first submission")

    def busy() -> str | None:
        for name in cluster.worker_names:
            if cluster.worker_task_pids(name):
                return name
        return None

    name = wait_until(busy, 600, "a worker running a task", step=0.05)
    running = len(cluster.worker_task_pids(name))
    cluster.kill(name, signal.SIGKILL)
    killed_at = time.time()
    time.sleep(5)
    cluster.start_component(name)
    return {"component": name, "at": killed_at, "tasks_running_when_killed": running}


def _holders(cluster: DistributedCluster) -> dict[str, int]:
    return cluster.triggers_by_triggerer()


def _beat(beats: list[tuple[object, ...]], job_id: str) -> float:
    return next((unix_time(beat) or 0.0) for i, beat in beats if str(i) == job_id)


def kill_triggerer(cluster: DistributedCluster, emu: DoitongEmulator, prompts: list[str]) -> dict[str, Any]:
    """When both triggerers hold waits, SIGKILL ``triggerer-1``; time until the other holds all its waits.

    Which triggerer job (the ``trigger.triggerer_id``) was killed is told by its heartbeat stopping.
    """

    def spread() -> dict[str, int] | None:
        held = _holders(cluster)
        return held if len(held) >= len(cluster.triggerer_names) else None

    held = wait_until(spread, 600, "waits on every triggerer", step=0.1)
    name = cluster.triggerer_names[0]
    cluster.kill(name, signal.SIGKILL)
    killed_at = time.time()

    time.sleep(5)  # the survivor heartbeats every second meanwhile; the killed one no more
    beats = cluster.query("select id, latest_heartbeat from job where job_type = 'TriggererJob'")
    dead = min((str(i) for i, _ in beats if str(i) in held), key=lambda i: _beat(beats, i))
    wait_until(lambda: _holders(cluster).get(dead, 0) == 0, 300, "the other triggerer to take over", step=0.2)
    takeover_s = time.time() - killed_at
    cluster.start_component(name)
    return {
        "component": name,
        "at": killed_at,
        "waits_held_by_killed": held[dead],
        "waits_held_by_others": sum(n for job_id, n in held.items() if job_id != dead),
        "takeover_s": takeover_s,
    }


DURING: dict[str, Callable[[DistributedCluster, DoitongEmulator, list[str]], dict[str, Any]] | None] = {
    "batch": None,
    "worker_sigkill": kill_worker,
    "triggerer_sigkill": kill_triggerer,
    "budget": None,
}


def run_scenario(
    name: str,
    *,
    settings: DistributedSettings,
    cluster: DistributedCluster,
    emu: DoitongEmulator,
    s3: S3Server,
    timeout: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    emu.reset()
    prompts = [f"{name}: {p}" for p in make_prompts(settings.prompts)]
    prefix = f"{name}-{time.time_ns()}"
    say(f"distributed/{name}: {len(prompts)} prompts -> {output_url(prefix)}")
    started = time.time()
    dag_id = SCENARIO_DAGS.get(name, MAPPED_DAG_ID)
    run_id = cluster.trigger(dag_id, {"prompts": prompts, "output": output_url(prefix)})
    during = DURING[name]
    event = during(cluster, emu, prompts) if during is not None else None
    if event is not None:
        say(f"distributed/{name}: killed {event['component']}")
    state = cluster.wait_for_run(run_id, timeout=timeout)
    time.sleep(1)
    result = collect(
        name=name,
        dag_id=dag_id,
        run_id=run_id,
        run_state=state,
        prompts=prompts,
        prefix=prefix,
        settings=settings,
        emu=emu,
        cluster=cluster,
        s3=s3,
    )
    if event is not None:
        result["killed"] = {k: v for k, v in event.items() if k != "at"}
        result["killed"]["after_first_submission_s"] = event["at"] - min(
            (e["t"] for e in emu.request_log() if e["kind"] == "submit"), default=event["at"]
        )
    say(
        f"distributed/{name}: {state} in {time.time() - started:.0f}s, makespan {result['makespan_s']}, "
        f"status/job {result['status_requests_per_job']:.2f}, 429s {result['http_429']}"
    )
    return result


def _cluster_env(emu: DoitongEmulator, s3: S3Server) -> dict[str, str]:
    return {
        "AIRFLOW_CONN_DOITONG_DEFAULT": json.dumps(
            {"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key}
        ),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(s3.airflow_connection()),
    }


def run_distributed(
    settings: DistributedSettings, *, say: Callable[[str], None] = print, keep: Path | None = None
) -> dict[str, Any]:
    """Start everything, run the scenarios, and return the ``distributed`` section (summary first)."""
    ensure_system_packages(say)
    if threading.current_thread() is threading.main_thread():
        # A plain SIGTERM (e.g. ``timeout``) still stops every process started below.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.TemporaryDirectory(prefix="doitong-distributed-")
    work = Path(keep or tmp.name)
    dags_dir = work / "dags"
    dags_dir.mkdir(parents=True, exist_ok=True)
    retry_delay = settings.window_real_seconds
    (dags_dir / "distributed_mapped.py").write_text(
        mapped_dag(poll_interval=settings.poll_interval, retry_delay=retry_delay, size=settings.size)
    )
    (dags_dir / "distributed_eager.py").write_text(
        mapped_dag(
            poll_interval=EAGER_POLL_INTERVAL,
            retry_delay=retry_delay,
            size=settings.size,
            dag_id=EAGER_DAG_ID,
        )
    )
    timeout = 900 + 6 * settings.prompts / settings.concurrency * settings.job_real_seconds
    api_key = f"sk-distributed-{secrets.token_hex(16)}"
    scenarios: dict[str, Any] = {}
    started = time.time()
    try:
        with (
            Redis() as redis,
            Postgres() as postgres,
            S3Server() as s3,
            DoitongEmulator(
                plan=settings.plan,
                time_scale=settings.time_scale,
                job_seconds=settings.job_seconds,
                credits=10_000_000,
                seed=settings.seed,
                api_key=api_key,
            ) as emu,
        ):
            s3.create_bucket(BUCKET)
            say(
                f"distributed: redis :{redis.port}, postgres :{postgres.port}, s3 :{s3.port}; Airflow in {work}"
            )
            cluster = DistributedCluster(
                home=work / "airflow",
                dags_folder=dags_dir,
                database_url=postgres.url,
                broker_url=redis.url,
                env=_cluster_env(emu, s3),
                workers=settings.workers,
                worker_concurrency=settings.worker_concurrency,
                triggerers=settings.triggerers,
            )
            with cluster:
                cluster.create_pool("doitong", settings.concurrency)
                cluster.wait_for_dag(MAPPED_DAG_ID)
                cluster.wait_for_dag(EAGER_DAG_ID)
                say(f"distributed: Airflow up after {time.time() - started:.0f}s")
                for name in settings.scenarios:
                    scenarios[name] = run_scenario(
                        name, settings=settings, cluster=cluster, emu=emu, s3=s3, timeout=timeout, say=say
                    )
                leaks, scanned = secrets_in_logs(
                    cluster, {"api_key": api_key, "aws_secret_key": S3Server.secret_key}
                )
                server_version = cluster.query("show server_version")[0][0]
    finally:
        if keep is None:
            tmp.cleanup()
    result = summarise(settings, scenarios, leaks=leaks, database=f"PostgreSQL {server_version}")
    result["logs_scanned"] = scanned
    return result


def summarise(
    settings: DistributedSettings, scenarios: dict[str, Any], *, leaks: dict[str, list[str]], database: str
) -> dict[str, Any]:
    """The section: headline keys over the scenarios (sums; the worst status rate; the plain batch's times).

    ``budget`` polls eagerly on purpose, so its status rate and failures are reported under
    ``rate_limit.eager_polling`` (and its failures also in ``failed_tasks``), not in the status rate.
    """
    runs = [r for name, r in scenarios.items() if name != "budget"]
    plain = scenarios.get("batch") or (runs[0] if runs else {})
    budget = scenarios.get("budget")
    return {
        "executor": "CeleryExecutor",
        "database": database,
        "storage": "S3 (moto server), ObjectStoragePath through the aws_default connection",
        "broker": "Redis",
        "workers": settings.workers,
        "triggerers": settings.triggerers,
        "killed": [f"{r['name']}: {r['killed']['component']}" for r in scenarios.values() if "killed" in r],
        "prompts": settings.prompts,
        "scenarios_run": len(scenarios),
        "failed_tasks": sum(r["failed_tasks"] + r["unfinished_tasks"] for r in scenarios.values()),
        "duplicate_submissions": sum(r["duplicate_submissions"] for r in scenarios.values()),
        "missing_files": sum(r["missing_files"] for r in scenarios.values()),
        "http_429": sum(r["http_429"] for r in scenarios.values()),
        "tasks_failed_by_429": sum(r["tasks_failed_by_429"] for r in scenarios.values()),
        "status_requests_per_job": max((r["status_requests_per_job"] for r in runs), default=None),
        "makespan_s": plain.get("makespan_s"),
        "ratio": plain.get("ratio"),
        "lower_bound_s": plain.get("lower_bound_s"),
        "rate_limit": {
            "busiest_window_by_scenario": {
                name: r["rate_limit"]["peak_in_fixed_window"] for name, r in scenarios.items()
            },
            "limit_per_window": settings.requests_per_window,
            "eager_polling": budget
            and {
                key: budget[key]
                for key in (
                    "rate_limit",
                    "http_429",
                    "tasks_failed_by_429",
                    "failed_tasks",
                    "status_requests_per_job",
                    "makespan_s",
                    "ratio",
                )
            },
        },
        "secrets_in_logs": leaks,
        "scenarios": scenarios,
        "settings": {
            **asdict(settings),
            "job_real_seconds": settings.job_real_seconds,
            "window_real_seconds": settings.window_real_seconds,
            "concurrency": settings.concurrency,
            "requests_per_window": settings.requests_per_window,
        },
    }
