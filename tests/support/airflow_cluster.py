"""A real, small Airflow: api-server, scheduler (LocalExecutor), dag-processor and triggerer.

Each component runs as its own process group in a temporary ``AIRFLOW_HOME`` with SQLite, so a test
or a benchmark can kill one (SIGKILL) and start it again.
"""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
FINISHED_RUN_STATES = frozenset({"success", "failed"})


def unix_time(value: object) -> float | None:
    """A database timestamp (naive means UTC) as a Unix time."""
    if value is None:
        return None
    from datetime import datetime, timezone

    moment = datetime.fromisoformat(str(value).replace(" ", "T"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, for a server that binds it later.

    An ephemeral port (what ``bind(0)`` and every outgoing connection draw from) could go to another
    socket before the server binds it (seconds later for an Airflow component), all the more with
    tests running in other processes; below the range only another explicit choice can take it.
    """
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    for _ in range(200):
        port = random.randrange(10_000, max(ephemeral, 10_001))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class AirflowCluster:
    """Start, watch and break a real Airflow.

    :param home: the ``AIRFLOW_HOME`` (created; its database is made with ``airflow db migrate``).
    :param dags_folder: the DAG files to serve.
    :param env: extra environment (connections as ``AIRFLOW_CONN_*``, config as ``AIRFLOW__*``).
    :param parallelism: LocalExecutor worker slots.
    """

    def __init__(
        self, *, home: Path, dags_folder: Path, env: Mapping[str, str] | None = None, parallelism: int = 16
    ) -> None:
        self.home = Path(home)
        self.dags_folder = Path(dags_folder)
        self.port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            # A writer waits up to 30 s for the database's lock (5 s by default): on a loaded
            # machine a request from the scheduler, the api-server or a task can hold it longer.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}?timeout=30",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API_AUTH__JWT_SECRET": "doitong-test-cluster-jwt-secret-0123456789",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **(env or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.states_seen: dict[str, set[str]] = {}
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # --- processes ----------------------------------------------------------------------
    def airflow(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run an ``airflow`` CLI command in this cluster's environment."""
        return subprocess.run(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            check=check,
            capture_output=True,
            text=True,
        )

    #: What a failed metadata-database query raises (the watcher keeps going past it).
    db_errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def migrate(self) -> None:
        """Create the metadata database unless it exists.

        A test session's freshly migrated database (``DOITONG_TEST_AIRFLOW_DB``, set by
        ``tests/conftest.py``) is copied rather than migrated again: the same schema, seconds sooner.
        """
        database = self.home / "airflow.db"
        template = os.environ.get("DOITONG_TEST_AIRFLOW_DB")
        if database.exists():
            return
        if template and Path(template).is_file():
            self._write_config()
            shutil.copyfile(template, database)
        else:
            self.airflow("db", "migrate")

    def _write_config(self) -> None:
        """The home's ``airflow.cfg``, with the keys every component must share.

        The first Airflow process in a home writes this file with freshly generated keys; ``db migrate``
        is that process unless the database is copied. Without it the components, started together,
        would each write their own keys (a Variable encrypted by one could not be read by another).
        """
        config = self.home / "airflow.cfg"
        if not config.exists():
            fernet = base64.urlsafe_b64encode(os.urandom(32)).decode()
            secret = base64.b64encode(os.urandom(16)).decode()
            config.write_text(f"[core]\nfernet_key = {fernet}\n\n[api]\nsecret_key = {secret}\n")

    def start(self, components: Iterable[str] = COMPONENTS) -> AirflowCluster:
        self.home.mkdir(parents=True, exist_ok=True)
        self.migrate()
        for name in components:
            self.start_component(name)
        self._wait_api()
        self._watcher = threading.Thread(target=self._watch_states, daemon=True)
        self._watcher.start()
        return self

    def start_component(self, name: str) -> None:
        args = [name, "--port", str(self.port)] if name == "api-server" else [name]
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a component's whole process group and reap it."""
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)

    def restart(self, name: str, sig: int = signal.SIGKILL) -> None:
        self.kill(name, sig)
        self.start_component(name)

    def stop(self) -> None:
        self._watch_stop.set()
        for name in list(self.procs):
            proc = self.procs[name]
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.time() + 20
        for proc in list(self.procs.values()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> AirflowCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_api(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("the api-server did not start; see api-server.log")

    # --- the metadata database ----------------------------------------------------------
    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True, timeout=30) as db:
            return db.execute(sql, params).fetchall()

    def _watch_states(self) -> None:
        while not self._watch_stop.wait(0.5):
            try:
                rows = self.query(
                    "select task_id, map_index, state from task_instance where state is not null"
                )
            except self.db_errors:
                continue
            for task_id, map_index, state in rows:
                self.states_seen.setdefault(f"{task_id}[{map_index}]", set()).add(str(state))

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.query("select 1 from dag where dag_id = ? and not is_stale", (dag_id,)):
                    return
            except self.db_errors:
                pass
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} was not parsed; see dag-processor.log")

    def create_pool(self, name: str, slots: int, *, include_deferred: bool = True) -> None:
        args = ["pools", "set", name, str(slots), f"Doitong {name}"]
        self.airflow(*args, *(["--include-deferred"] if include_deferred else []))

    def trigger(self, dag_id: str, conf: Mapping[str, object] | None = None) -> str:
        self.wait_for_dag(dag_id)
        run_id = f"test__{dag_id}__{time.time_ns()}"
        self.airflow("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(dict(conf or {})))
        return run_id

    def run_state(self, run_id: str) -> str | None:
        rows = self.query("select state from dag_run where run_id = ?", (run_id,))
        return str(rows[0][0]) if rows else None

    def wait_for_run(self, run_id: str, timeout: float = 600) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            state = self.run_state(run_id)
            if state in FINISHED_RUN_STATES:
                return state
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish in {timeout}s")

    def task_states(self, run_id: str) -> dict[str, str]:
        rows = self.query("select task_id, map_index, state from task_instance where run_id = ?", (run_id,))
        return {f"{t}[{m}]" if m >= 0 else str(t): str(s) for t, m, s in rows}

    def count_state(self, task_id: str, state: str) -> int:
        rows = self.query(
            "select count(*) from task_instance where task_id = ? and state = ?", (task_id, state)
        )
        return int(rows[0][0])

    def task_instances(self, run_id: str) -> list[dict[str, object]]:
        """Every task instance of a run: id, task_id, map_index, state, try_number, start and end (Unix)."""
        rows = self.query(
            "select id, task_id, map_index, state, try_number, start_date, end_date from task_instance "
            "where run_id = ?",
            (run_id,),
        )
        keys = ("id", "task_id", "map_index", "state", "try_number", "start", "end")
        return [
            {**dict(zip(keys, row, strict=True)), "start": unix_time(row[5]), "end": unix_time(row[6])}
            for row in rows
        ]

    def run_times(self, run_id: str) -> tuple[float | None, float | None]:
        """A run's start and end as Unix times (``None`` while unknown)."""
        rows = self.query("select start_date, end_date from dag_run where run_id = ?", (run_id,))
        return (unix_time(rows[0][0]), unix_time(rows[0][1])) if rows else (None, None)

    def task_state_value(self, run_id: str, task_id: str, map_index: int, key: str) -> str | None:
        """A value a task kept in its task state store (e.g. a resumable job's external id), raw."""
        rows = self.query(
            "select value from task_state_store where run_id = ? and task_id = ? and map_index = ? and key = ?",
            (run_id, task_id, map_index, key),
        )
        return str(rows[0][0]) if rows else None

    def task_pids(
        self, run_id: str, task_id: str, map_index: int = -1, *, supervisor: bool = False
    ) -> list[int]:
        """Processes running a task instance now, found by their process titles.

        :param supervisor: the LocalExecutor worker supervising the task, instead of the task's own process.
        """
        import psutil

        rows = self.query(
            "select id from task_instance where run_id = ? and task_id = ? and map_index = ?",
            (run_id, task_id, map_index),
        )
        if not rows:
            return []
        import uuid

        ti_id = str(uuid.UUID(str(rows[0][0])))
        pids = []
        for proc in psutil.process_iter(["cmdline"]):
            title = " ".join(proc.info.get("cmdline") or ()).strip()
            if not (title.startswith("airflow worker -- ") and title.endswith(ti_id)):
                continue
            is_supervisor = "LocalExecutor" in title
            is_task = not is_supervisor
            if is_supervisor if supervisor else is_task:
                pids.append(proc.pid)
        return pids

    def component_pids(self, name: str) -> list[int]:
        """A running component's process and all its descendants."""
        import psutil

        proc = self.procs.get(name)
        if proc is None:
            return []
        try:
            root = psutil.Process(proc.pid)
            return [root.pid, *(child.pid for child in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def attempt_log(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, attempt: int = 1
    ) -> str:
        """One attempt's task log, with its trigger logs (empty if there is none)."""
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder = folder / f"map_index={map_index}"
        parts = []
        for path in sorted(folder.glob(f"attempt={attempt}.log*")):
            try:
                parts.append(path.read_text(errors="replace"))
            except OSError:
                continue
        return "\n".join(parts)

    def task_logs(self) -> str:
        """Every task log and component log of the cluster, as one text."""
        parts = []
        for path in sorted(self.home.rglob("*.log")):
            try:
                parts.append(path.read_text(errors="replace"))
            except OSError:
                continue
        return "\n".join(parts)
