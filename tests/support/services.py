"""Redis, PostgreSQL and an S3 store (moto's server) as this machine's own processes, for a real Airflow.

Each listens on a free loopback port with its data in a fresh temporary folder and is stopped (and
its folder removed) on exit. Redis and PostgreSQL are Debian's packages: :func:`ensure_system_packages`
installs them with ``apt-get`` when they are missing (as root; otherwise it says what to run).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.airflow_cluster import free_port

APT_PACKAGES = ("redis-server", "postgresql")
#: PostgreSQL refuses to run as root; as root, its processes run as this account (the Debian
#: package creates it).
POSTGRES_ACCOUNT = "postgres"


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server's ``bin`` folder (Debian keeps them under /usr/lib/postgresql)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).resolve().parent if on_path and shutil.which("initdb") else None


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parent.parent.name
    return tuple(int(part) for part in version.split(".") if part.isdigit())


def redis_bin() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )


def ensure_system_packages(say: Callable[[str], None] = print) -> None:
    """Install Redis and PostgreSQL with apt-get when either is missing.

    :raises RuntimeError: if they are missing and this process cannot install them (not root, no apt-get).
    """
    if redis_bin() and postgres_bin():
        return
    command = f"apt-get update && apt-get install -y {' '.join(APT_PACKAGES)}"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"Redis and PostgreSQL are needed; install them with: sudo sh -c '{command}'")
    say(f"installing {', '.join(APT_PACKAGES)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], check=True, env=env)
    if not (redis_bin() and postgres_bin()):
        raise RuntimeError("apt-get installed the packages, but redis-server or postgres is still missing")


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{what} did not open port {port}")


class _Service:
    """A server process in its own session, with a temporary folder removed when it stops."""

    name = "service"
    #: The signal that shuts the server down cleanly.
    stop_signal = signal.SIGTERM

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix=f"doitong-{self.name}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, args: list[str], **kwargs: Any) -> None:
        log = open(self.folder / f"{self.name}.log", "ab")  # noqa: SIM115 - kept open for the process
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
        )
        _wait_port(self.port, self.proc, self.name)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, self.stop_signal)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Any:
        raise NotImplementedError


class Redis(_Service):
    """``redis-server`` on loopback, nothing saved to disk: the Celery broker."""

    name = "redis"

    def start(self) -> Redis:
        binary = redis_bin()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self._spawn(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            + ["--dir", str(self.folder)]
        )
        return self

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Postgres(_Service):
    """A throw-away PostgreSQL cluster (``initdb`` + ``postgres``) with one database, ``airflow``.

    Trust authentication on loopback only, and no fsync: the data lives as long as the run.
    """

    name = "postgres"
    #: A "fast" shutdown: SIGTERM would wait for every client to disconnect.
    stop_signal = signal.SIGINT
    user = "airflow"
    database = "airflow"

    def _as_account(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        shutil.chown(self.folder, user=POSTGRES_ACCOUNT, group=POSTGRES_ACCOUNT)
        return {"user": POSTGRES_ACCOUNT}

    def start(self) -> Postgres:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed")
        account = self._as_account()
        data = self.folder / "data"
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", self.user, "--auth=trust", "-E", "UTF8"]
            + ["--no-instructions"],
            check=True,
            capture_output=True,
            cwd=self.folder,
            **account,
        )
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.folder),
            "max_connections": "300",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        args = [str(bindir / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            args += ["-c", f"{key}={value}"]
        self._spawn(args, cwd=self.folder, **account)
        self._create_database(bindir, account)
        return self

    def _create_database(self, bindir: Path, account: dict[str, Any]) -> None:
        createdb = (
            bindir / "createdb" if (bindir / "createdb").exists() else Path(shutil.which("createdb") or "")
        )
        deadline = time.time() + 30
        while True:
            done = subprocess.run(
                [str(createdb), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database],
                capture_output=True,
                text=True,
                cwd=self.folder,
                **account,
            )
            if done.returncode == 0:
                return
            if time.time() > deadline:
                raise RuntimeError(f"createdb failed: {done.stderr.strip()}")
            time.sleep(0.5)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (psycopg2)."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"


class S3Server(_Service):
    """moto's S3-compatible server (``moto_server``), with its buckets in memory."""

    name = "s3"
    access_key = "doitong-test-access-key"
    secret_key = "doitong-test-secret-key"
    region = "us-east-1"

    def start(self) -> S3Server:
        self._spawn(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "1"},
        )
        return self

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, bucket: str) -> None:
        self.client().create_bucket(Bucket=bucket)

    def objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every key under ``prefix`` with its size."""
        found: dict[str, int] = {}
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                found[item["Key"]] = int(item["Size"])
        return found

    def read(self, bucket: str, key: str) -> bytes:
        return self.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def airflow_connection(self) -> dict[str, Any]:
        """An Airflow ``aws`` connection to this store (JSON for ``AIRFLOW_CONN_*``)."""
        return {
            "conn_type": "aws",
            "login": self.access_key,
            "password": self.secret_key,
            "extra": {"endpoint_url": self.endpoint_url, "region_name": self.region},
        }
