"""A distributed Airflow: CeleryExecutor (Redis broker), PostgreSQL, several Celery workers and triggerers.

Like :class:`~tests.support.airflow_cluster.AirflowCluster`, every component is its own process group
in a temporary ``AIRFLOW_HOME`` so one can be SIGKILLed and started again; components are named
``api-server``, ``scheduler``, ``dag-processor``, ``triggerer-1``..``triggerer-N`` and
``worker-1``..``worker-M``. Redis and PostgreSQL are started by the caller
(:mod:`tests.support.services`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests.support.airflow_cluster import AirflowCluster, free_port, unix_time


def _dsn(sqlalchemy_url: str) -> str:
    """A libpq URL from a SQLAlchemy one (``postgresql+psycopg2://`` -> ``postgresql://``)."""
    scheme, rest = sqlalchemy_url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


class DistributedCluster(AirflowCluster):
    """Start, watch and break a CeleryExecutor Airflow on PostgreSQL.

    :param database_url: the metadata database (SQLAlchemy URL, PostgreSQL with psycopg2); also the
        Celery result backend.
    :param broker_url: the Celery broker (``redis://``).
    :param workers: Celery workers, each its own process (``airflow celery worker``).
    :param worker_concurrency: task slots per worker.
    :param triggerers: triggerer processes.
    :param heartbeat_timeout: seconds without a task heartbeat after which the scheduler fails the
        task instance (``[scheduler] task_instance_heartbeat_timeout``), so a killed worker's tasks
        are retried soon.
    :param queued_timeout: seconds a task instance may stay queued before the scheduler queues it
        again (``[scheduler] task_queued_timeout``, checked every 10 s here): a task a killed worker
        had received but not started stays queued until then, its Celery message unacknowledged.
    """

    def __init__(
        self,
        *,
        home: Path,
        dags_folder: Path,
        database_url: str,
        broker_url: str,
        env: Mapping[str, str] | None = None,
        workers: int = 2,
        worker_concurrency: int = 8,
        triggerers: int = 2,
        heartbeat_timeout: int = 20,
        queued_timeout: int = 90,
    ) -> None:
        self.database_url = database_url
        self.worker_names = tuple(f"worker-{n}" for n in range(1, workers + 1))
        self.triggerer_names = tuple(f"triggerer-{n}" for n in range(1, triggerers + 1))
        self.worker_concurrency = worker_concurrency
        super().__init__(
            home=home,
            dags_folder=dags_folder,
            parallelism=max(32, workers * worker_concurrency),
            env={
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
                "AIRFLOW__CELERY__BROKER_URL": broker_url,
                "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database_url}",
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(heartbeat_timeout),
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(queued_timeout),
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "10",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
                **(env or {}),
            },
        )
        # Each worker and triggerer serves its logs on its own port (they share one host here).
        self.log_ports = {name: free_port() for name in (*self.worker_names, *self.triggerer_names)}
        self._db_lock = threading.Lock()
        self._db: Any = None
        import psycopg2

        self.db_errors = (psycopg2.Error,)

    @property
    def components(self) -> tuple[str, ...]:
        return ("api-server", "scheduler", "dag-processor", *self.triggerer_names, *self.worker_names)

    def migrate(self) -> None:
        migrated = self.home / ".migrated"
        if migrated.exists():
            return
        done = self.airflow("db", "migrate", check=False)
        if done.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        migrated.touch()

    def start(self, components: Iterable[str] | None = None) -> DistributedCluster:
        super().start(self.components if components is None else components)
        return self

    def start_component(self, name: str) -> None:
        if name in self.worker_names:
            # Each its own pid file: two on one host would otherwise refuse to start.
            args = [
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--pid",
                str(self.home / f"{name}.pid"),
            ]
            args += ["--concurrency", str(self.worker_concurrency)]
            env = {**self.env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.log_ports[name])}
        elif name in self.triggerer_names:
            args = ["triggerer", "--pid", str(self.home / f"{name}.pid")]
            env = {**self.env, "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.log_ports[name])}
        else:
            super().start_component(name)
            return
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        super().stop()
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --- the metadata database ----------------------------------------------------------
    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """Run a read-only query (``?`` placeholders, as for SQLite) on one kept connection."""
        import psycopg2

        with self._db_lock:
            if self._db is None or self._db.closed:
                self._db = psycopg2.connect(_dsn(self.database_url))
                self._db.set_session(readonly=True, autocommit=True)
            try:
                with self._db.cursor() as cursor:
                    cursor.execute(sql.replace("?", "%s"), params)
                    return list(cursor.fetchall())
            except psycopg2.OperationalError:
                self._db.close()
                raise

    def triggers_by_triggerer(self) -> dict[str, int]:
        """How many triggers each triggerer runs now, by the triggerer's job id."""
        rows = self.query(
            "select triggerer_id, count(*) from trigger where triggerer_id is not null group by triggerer_id"
        )
        return {str(job_id): int(str(count)) for job_id, count in rows}

    def triggerer_running(self, job_id: str, *, pause_s: float = 3.0) -> str | None:
        """The triggerer component whose triggerer job is ``job_id`` (``None`` if none answers).

        The ``job`` table does not say which process a job is (they share one host), so each
        triggerer is paused in turn (SIGSTOP of its process group) until that job's heartbeat, sent
        every second, stops; the pause of one that is not it is undone (SIGCONT). The one found is
        left paused, to be killed or continued by the caller.
        """
        for name in self.triggerer_names:
            proc = self.procs.get(name)
            if proc is None:
                continue
            os.killpg(proc.pid, signal.SIGSTOP)
            paused_at = time.time()
            time.sleep(pause_s)
            rows = self.query("select latest_heartbeat from job where id = ?", (int(job_id),))
            beat = unix_time(rows[0][0]) if rows else None
            if beat is not None and beat < paused_at + 0.5:
                return name
            os.killpg(proc.pid, signal.SIGCONT)
        return None

    def worker_task_pids(self, name: str) -> list[int]:
        """A worker's pool processes supervising a task now (titled with the task's id, with the task's
        process as their child; the title outlives the task, the child does not)."""
        import psutil

        proc = self.procs.get(name)
        if proc is None:
            return []
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in family:
            try:
                title = " ".join(child.cmdline())
                if title.startswith("airflow supervisor: ") and child.children():
                    found.append(child.pid)
            except psutil.Error:
                continue
        return found
