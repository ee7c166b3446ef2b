"""The batch on a distributed Airflow: CeleryExecutor on Redis, PostgreSQL, two workers, two triggerers, S3.

Every component is its own process (:class:`~tests.support.distributed_cluster.DistributedCluster`);
Redis, PostgreSQL and moto's S3 server run as this machine's processes on loopback
(:mod:`tests.support.services`), and the emulator (pro plan) in this process. Each scenario is one
DAG run of the same number of prompts against the emulator, reset in between. With the mapped
deferrable ``FluxGenerateOperator`` (``operator: mapped``):

* ``batch``: nothing breaks;
* ``worker_sigkill``: a Celery worker (its process group and each task's) is SIGKILLed while it runs tasks,
  mid-batch, and started again;
* ``triggerer_sigkill``: once both triggerers hold waits, one is SIGKILLed; the other takes its
  waits over (after ``triggerer_health_check_threshold``), then the killed one is started again;
* ``budget``: the batch with ``poll_interval=0.25`` s, so both triggerers' pollers want far more
  than the plan's requests a minute: what they and the workers' submissions do to the budget.

With ``FluxBatchOperator`` (one task for the whole batch, its ledger under its S3 output folder):

* ``flux_batch`` (``operator: batch``, sync) and ``flux_batch_deferrable`` (``batch_deferrable``):
  nothing breaks;
* ``flux_batch_worker_sigkill`` (sync): the worker running the batch is SIGKILLed once half its
  waves are submitted and stays down until the next try runs on the other worker;
* ``flux_batch_triggerer_sigkill`` (deferrable): the triggerer running the batch's wait is SIGKILLed.

Several DAG runs at once on the one account (:mod:`benchmarks.distributed_together`):

* ``shared_account``: the sync batch, the deferrable batch and the mapped operator triggered
  together (``shared_prompts`` each), a worker and then a triggerer SIGKILLed;
* ``cache_concurrent``: two batches (sync, deferrable) of the same ``cache_prompts`` prompts with the
  image cache on an ``s3://`` prefix, started together, a worker SIGKILLed.
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

from benchmarks.batch import BatchSettings, make_prompts
from benchmarks.distributed_checks import collect, secrets_in_logs
from benchmarks.distributed_dags import (
    BATCH_DAG_ID,
    BATCH_DEFERRABLE_DAG_ID,
    BUCKET,
    DAG_IDS,
    EAGER_DAG_ID,
    MAPPED_DAG_ID,
    PROMPTS_PREFIX,
    s3_url,
    write_dags,
)
from benchmarks.distributed_kills import (
    kill_batch_triggerer,
    kill_batch_worker,
    kill_triggerer,
    kill_worker,
)
from benchmarks.distributed_together import run_together
from doitong_emulator import DoitongEmulator
from tests.support.distributed_cluster import DistributedCluster
from tests.support.services import Postgres, Redis, S3Server, ensure_system_packages

#: What a scenario does while its run goes on: (cluster, emulator, prompts, dag_id, run_id) -> the kill.
During = Callable[[DistributedCluster, DoitongEmulator, list[str], str, str], dict[str, Any]]


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One scenario: which operator (``mapped``, ``batch``, ``batch_deferrable``), its DAG, and what breaks.

    ``together``: several DAG runs at once (:func:`benchmarks.distributed_together.run_together`
    triggers them and does the kills); ``operator`` and ``dag_id`` then only name it.
    """

    operator: str
    dag_id: str
    during: During | None = None
    together: bool = False


def _mapped_kill(kill: Callable[..., dict[str, Any]]) -> During:
    return lambda cluster, emu, prompts, _dag_id, _run_id: kill(cluster, emu, prompts)


def _batch_kill(kill: Callable[..., dict[str, Any]]) -> During:
    return lambda cluster, emu, prompts, dag_id, run_id: kill(
        cluster, emu, prompts, dag_id=dag_id, run_id=run_id
    )


SCENARIO_TABLE = {
    "batch": Scenario(operator="mapped", dag_id=MAPPED_DAG_ID),
    "worker_sigkill": Scenario(operator="mapped", dag_id=MAPPED_DAG_ID, during=_mapped_kill(kill_worker)),
    "triggerer_sigkill": Scenario(
        operator="mapped", dag_id=MAPPED_DAG_ID, during=_mapped_kill(kill_triggerer)
    ),
    "budget": Scenario(operator="mapped", dag_id=EAGER_DAG_ID),
    "flux_batch": Scenario(operator="batch", dag_id=BATCH_DAG_ID),
    "flux_batch_deferrable": Scenario(operator="batch_deferrable", dag_id=BATCH_DEFERRABLE_DAG_ID),
    "flux_batch_worker_sigkill": Scenario(
        operator="batch", dag_id=BATCH_DAG_ID, during=_batch_kill(kill_batch_worker)
    ),
    "flux_batch_triggerer_sigkill": Scenario(
        operator="batch_deferrable", dag_id=BATCH_DEFERRABLE_DAG_ID, during=_batch_kill(kill_batch_triggerer)
    ),
    "shared_account": Scenario(operator="shared", dag_id="three DAGs", together=True),
    "cache_concurrent": Scenario(operator="cache", dag_id="two cached batches", together=True),
}
SCENARIOS = tuple(SCENARIO_TABLE)
#: The scenarios whose status rate is held to the goal (``budget`` polls eagerly on purpose).
EAGER_SCENARIOS = ("budget",)
OPERATORS = ("mapped", "batch", "batch_deferrable")


@dataclass(frozen=True)
class DistributedSettings(BatchSettings):
    """The distributed run: the batch's settings plus the cluster's shape.

    :param workers: Celery workers.
    :param worker_concurrency: task slots per worker.
    :param triggerers: triggerer processes.
    :param scenarios: which scenarios to run, in order.
    :param batch_min_defer: as in :class:`BatchSettings`, low enough that the deferrable batch
        defers between the quick profile's 16-s waves.
    :param shared_prompts: ``shared_account``'s prompts: sync batch, deferrable batch, mapped.
    :param cache_prompts: ``cache_concurrent``'s prompts (each of its two runs asks for all of them).
    """

    workers: int = 2
    worker_concurrency: int = 8
    triggerers: int = 2
    scenarios: tuple[str, ...] = SCENARIOS
    batch_min_defer: float = 2.0
    shared_prompts: tuple[int, int, int] = (30, 30, 12)
    cache_prompts: int = 20


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
    scenario = SCENARIO_TABLE[name]
    if scenario.together:
        return run_together(
            name, settings=settings, cluster=cluster, emu=emu, s3=s3, timeout=timeout, say=say
        )
    emu.reset()
    prompts = [f"{name}: {p}" for p in make_prompts(settings.prompts)]
    prefix = f"{name}-{time.time_ns()}"
    conf: dict[str, Any] = {"output": s3_url(prefix)}
    if scenario.operator == "mapped":
        conf["prompts"] = prompts
    else:  # FluxBatchOperator reads them from a file in the bucket
        key = f"{PROMPTS_PREFIX}/{prefix}.txt"
        s3.client().put_object(Bucket=BUCKET, Key=key, Body="\n".join(prompts).encode())
        conf["prompts_file"] = s3_url(key)
    say(f"distributed/{name}: {len(prompts)} prompts, {scenario.operator} -> {conf['output']}")
    started = time.time()
    run_id = cluster.trigger(scenario.dag_id, conf)
    event = None
    if scenario.during is not None:
        try:
            event = scenario.during(cluster, emu, prompts, scenario.dag_id, run_id)
            say(f"distributed/{name}: killed {event['component']}")
        except TimeoutError as exc:  # the run goes on; the scenario is reported as not done
            event = {"component": None, "at": time.time(), "missed": str(exc)}
            say(f"distributed/{name}: nothing killed: {exc}")
    state = cluster.wait_for_run(run_id, timeout=timeout)
    time.sleep(1)
    result = collect(
        name=name,
        operator=scenario.operator,
        dag_id=scenario.dag_id,
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
        f"status/job {result['status_requests_per_job']:.2f}, 429s {result['http_429']}, "
        f"duplicates {result['duplicate_submissions']}, missing {result['missing_files']}"
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
    unknown = sorted(set(settings.scenarios) - set(SCENARIO_TABLE))
    if unknown:
        raise ValueError(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}")
    ensure_system_packages(say)
    if threading.current_thread() is threading.main_thread():
        # A plain SIGTERM (e.g. ``timeout``) still stops every process started below.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.TemporaryDirectory(prefix="doitong-distributed-")
    work = Path(keep or tmp.name)
    dags_dir = work / "dags"
    dags_dir.mkdir(parents=True, exist_ok=True)
    write_dags(settings, dags_dir)
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
                for dag_id in DAG_IDS:
                    cluster.wait_for_dag(dag_id)
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


def _totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The checks summed over ``runs``, and the worst status rate of those not polling eagerly."""
    paced = [r for r in runs if r["name"] not in EAGER_SCENARIOS]
    return {
        "failed_tasks": sum(r["failed_tasks"] + r["unfinished_tasks"] for r in runs),
        "duplicate_submissions": sum(r["duplicate_submissions"] for r in runs),
        "missing_files": sum(r["missing_files"] for r in runs),
        "http_429": sum(r["http_429"] for r in runs),
        "tasks_failed_by_429": sum(r["tasks_failed_by_429"] for r in runs),
        "kills_missed": sum(1 for r in runs if "missed" in (r.get("killed") or {})),
        "status_requests_per_job": max((r["status_requests_per_job"] for r in paced), default=None),
    }


def _by_operator(scenarios: dict[str, Any]) -> dict[str, Any]:
    """Each operator's scenarios, checks and plain batch (its first scenario without a kill)."""
    found = {}
    for operator in OPERATORS:
        runs = [r for r in scenarios.values() if r["operator"] == operator]
        if not runs:
            continue
        plain: dict[str, Any] = next(
            (r for r in runs if "killed" not in r and r["name"] not in EAGER_SCENARIOS), {}
        )
        found[operator] = {
            "scenarios": [r["name"] for r in runs],
            **_totals(runs),
            "makespan_s": plain.get("makespan_s"),
            "ratio": plain.get("ratio"),
        }
    return found


def summarise(
    settings: DistributedSettings, scenarios: dict[str, Any], *, leaks: dict[str, list[str]], database: str
) -> dict[str, Any]:
    """The section: headline keys over the scenarios (sums; the worst status rate; the plain batch's times).

    ``budget`` polls eagerly on purpose, so its status rate and failures are reported under
    ``rate_limit.eager_polling`` (and its failures also in ``failed_tasks``), not in the status rate.
    ``makespan_s`` and ``ratio`` are the mapped operator's plain ``batch`` (each operator's are in
    ``operators``).
    """
    runs = list(scenarios.values())
    plain: dict[str, Any] = scenarios.get("batch") or next((r for r in runs if "killed" not in r), {})
    budget = scenarios.get("budget")
    return {
        "executor": "CeleryExecutor",
        "database": database,
        "storage": "S3 (moto server), ObjectStoragePath through the aws_default connection",
        "broker": "Redis",
        "workers": settings.workers,
        "triggerers": settings.triggerers,
        "killed": [
            f"{r['name']}: {r['killed']['component'] or 'nothing (missed)'}" for r in runs if "killed" in r
        ],
        "prompts": settings.prompts,
        "scenarios_run": len(scenarios),
        **_totals(runs),
        "makespan_s": plain.get("makespan_s"),
        "ratio": plain.get("ratio"),
        "lower_bound_s": plain.get("lower_bound_s"),
        "operators": _by_operator(scenarios),
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
