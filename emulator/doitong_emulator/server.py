"""Running the emulator: uvicorn in a background thread, or in the foreground for the CLI."""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import uvicorn

from airflow_provider_doitong.client.contract import OUTPUT_URL_TTL_SECONDS
from doitong_emulator.accounts import (
    DEFAULT_ACCOUNT_NAME,
    DEFAULT_API_KEY,
    DEFAULT_CREDITS,
    DEFAULT_PLAN,
    DEFAULT_WEBHOOK_SECRET,
    EmulatorAccount,
    LimitOverrides,
)
from doitong_emulator.app import build_app
from doitong_emulator.faults import FaultConfig, FaultInjector
from doitong_emulator.persistence import load_state, save_state
from doitong_emulator.state import EmulatorConfig, EmulatorState

log = logging.getLogger(__name__)

#: The listening socket's accept backlog.
BACKLOG = 2048


def _accounts(
    accounts: Sequence[EmulatorAccount] | None,
    api_key: str,
    plan: str,
    credits: int,
    webhook_secret: str,
    name: str,
) -> Sequence[EmulatorAccount]:
    """``accounts``, or without them the one account the other arguments describe.

    :raises ValueError: ``accounts`` is empty.
    """
    if accounts is None:
        accounts = [
            EmulatorAccount(
                api_key=api_key, plan=plan, credits=credits, webhook_secret=webhook_secret, name=name
            )
        ]
    if not accounts:
        raise ValueError("at least one account is required")
    return accounts


class DoitongEmulator:
    """A local Doitong API server speaking the contract over real HTTP.

    ``with DoitongEmulator(plan="pro", time_scale=0.05, job_seconds=20) as emu:`` serves on
    ``emu.base_url`` from a background thread until the block ends. Without ``accounts`` there is
    one account built from ``api_key``, ``plan``, ``credits``, ``webhook_secret`` and ``name``.

    :param host: the interface to listen on.
    :param port: the port; 0 picks a free one (kept across :meth:`restart`).
    :param plan: the default account's plan.
    :param api_key: the default account's key.
    :param credits: the default account's starting credits.
    :param webhook_secret: the default account's webhook secret.
    :param name: the default account's label.
    :param accounts: accounts to serve instead of the default one.
    :param time_scale: multiplies job durations, queueing, the rate-limit window and webhook backoff.
    :param job_seconds: emulated processing seconds per job.
    :param job_seconds_spread: per-job processing time is drawn from ``job_seconds ± spread``.
    :param queue_seconds: emulated seconds a new job is ``queued`` before ``processing``.
    :param seed: seeds job durations and, unless ``faults`` is given, fault draws.
    :param faults: the fault configuration (none by default).
    :param requests_per_minute: overrides every account's plan value (unless the account sets its own).
    :param concurrent_jobs: likewise for concurrent jobs.
    :param daily_limit: likewise for daily submissions (``accounts.UNLIMITED`` lifts it).
    :param output_ttl_seconds: real seconds outputs stay downloadable after completion.
    :param webhook_attempts: delivery attempts per webhook.
    :param webhook_backoff_s: emulated seconds before the first webhook retry, doubling after.
    :param public_url: the base URL put in job ``url`` fields, if not ``http://host:port``.
    :param state_file: load state from this file at construction and save it when the server stops.
    :param startup_timeout: seconds to wait for the server to answer.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        plan: str = DEFAULT_PLAN,
        api_key: str = DEFAULT_API_KEY,
        credits: int = DEFAULT_CREDITS,
        webhook_secret: str = DEFAULT_WEBHOOK_SECRET,
        name: str = DEFAULT_ACCOUNT_NAME,
        accounts: Sequence[EmulatorAccount] | None = None,
        time_scale: float = 1.0,
        job_seconds: float = 20.0,
        job_seconds_spread: float = 0.0,
        queue_seconds: float = 0.0,
        seed: int | None = None,
        faults: FaultConfig | None = None,
        requests_per_minute: int | None = None,
        concurrent_jobs: int | None = None,
        daily_limit: int | None = None,
        output_ttl_seconds: float | None = OUTPUT_URL_TTL_SECONDS,
        webhook_attempts: int = 4,
        webhook_backoff_s: float = 1.0,
        public_url: str | None = None,
        state_file: str | os.PathLike[str] | None = None,
        startup_timeout: float = 15.0,
    ) -> None:
        self.host = host
        self._port = port
        self.public_url = public_url.rstrip("/") if public_url else None
        self.state_file = state_file
        self.startup_timeout = startup_timeout
        config = EmulatorConfig(
            time_scale=time_scale,
            job_seconds=job_seconds,
            job_seconds_spread=job_seconds_spread,
            queue_seconds=queue_seconds,
            seed=seed,
            limits=LimitOverrides(
                requests_per_minute=requests_per_minute,
                concurrent_jobs=concurrent_jobs,
                daily_limit=daily_limit,
            ),
            output_ttl_seconds=output_ttl_seconds,
            webhook_attempts=webhook_attempts,
            webhook_backoff_s=webhook_backoff_s,
        )
        accounts = _accounts(accounts, api_key, plan, credits, webhook_secret, name)
        injector = FaultInjector(config=faults if faults is not None else FaultConfig(seed=seed))
        self.state = EmulatorState(config=config, accounts=accounts, faults=injector)
        if state_file is not None:
            load_state(self.state, state_file)
        self.app = build_app(self.state, on_shutdown=self._on_shutdown)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # --- addresses and accounts -----------------------------------------------------------
    @property
    def port(self) -> int:
        """The port (0 until first started with ``port=0``)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` (or ``public_url``)."""
        if self.public_url:
            return self.public_url
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}"

    @property
    def accounts(self) -> list[EmulatorAccount]:
        """The accounts, the default (first) one first."""
        return [account.config for account in self.state.accounts]

    @property
    def api_key(self) -> str:
        """The first account's API key."""
        return self.accounts[0].api_key

    @property
    def webhook_secret(self) -> str:
        """The first account's webhook secret."""
        return self.accounts[0].webhook_secret

    def add_account(self, account: EmulatorAccount | None = None, **kwargs: Any) -> EmulatorAccount:
        """Add an account, while running or not.

        :param account: the account; or pass :class:`EmulatorAccount` fields as keyword arguments.
        :param kwargs: ``api_key``, ``plan``, ``credits``, ``webhook_secret``, ``name``, limit overrides.
        """
        if account is None:
            account = EmulatorAccount(**kwargs)
        elif kwargs:
            raise TypeError("pass either an EmulatorAccount or keyword arguments, not both")
        self.state.add_account(account)
        return account

    def credits(self, name: str | None = None) -> int:
        """An account's current balance.

        :param name: the account's name; the first account by default.
        """
        with self.state.lock:
            self.state.settle()
            account = self.state.accounts[0] if name is None else self.state.account(name)
            return account.credits

    def job(self, job_id: str) -> dict[str, Any] | None:
        """A job as the API would show it now (without counting a read), or ``None``.

        :param job_id: the job id.
        """
        with self.state.lock:
            job = self.state.jobs.get(job_id)
            return None if job is None else self.state.job_json(job)

    # --- faults and counters --------------------------------------------------------------
    @property
    def faults(self) -> FaultConfig:
        """The current fault configuration."""
        return self.state.faults.config

    def set_faults(self, config: FaultConfig | None = None, **kwargs: Any) -> None:
        """Change the faults at runtime (re-seeding their draws).

        :param config: the new configuration; or pass :class:`FaultConfig` fields as keyword arguments.
        :param kwargs: fault fields, used when ``config`` is ``None``.
        """
        self.state.faults.configure(config if config is not None else FaultConfig(**kwargs))

    def rotate_key(self, new_key: str, *, old_key: str | None = None, old_key_valid_for: float = 0.0) -> None:
        """Rotate an account's API key: ``new_key`` serves it from now on, and ``old_key`` (the default
        account's by default) is refused with 401 once ``old_key_valid_for`` real seconds have passed."""
        self.app.rotations.rotate(
            old_key=old_key or self.api_key, new_key=new_key, old_key_valid_for=old_key_valid_for
        )

    def stats(self) -> dict[str, Any]:
        """The counters, as ``GET /_emulator/stats`` shows them."""
        return self.state.snapshot()

    def request_log(self) -> list[dict[str, Any]]:
        """``[{"t", "kind", "status"}, ...]`` for every API request."""
        return self.state.request_log()

    def read_log(self) -> list[dict[str, Any]]:
        """``[{"t", "job"}, ...]`` for every job read: which jobs each status request asked for."""
        return self.state.read_log()

    def reset(self) -> None:
        """Forget jobs and counters and restore the starting credits."""
        self.state.reset()

    def save_state(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write jobs, balances and counters to a file.

        :param path: the file; ``state_file`` by default.
        """
        target = path if path is not None else self.state_file
        if target is None:
            raise ValueError("no path given and no state_file configured")
        save_state(self.state, target)

    def _on_shutdown(self) -> None:
        if self.state_file is not None:
            save_state(self.state, self.state_file)

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port))
            sock.listen(BACKLOG)
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        self.state.base_url = self.base_url
        return sock

    def _make_server(self) -> uvicorn.Server:
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            log_config=None,
            access_log=False,
            backlog=BACKLOG,
            lifespan="on",
            timeout_graceful_shutdown=3,
            timeout_keep_alive=30,
        )
        return uvicorn.Server(config)

    def start(self) -> DoitongEmulator:
        """Serve from a background thread; return once the server answers.

        :raises RuntimeError: if it does not come up within ``startup_timeout``.
        """
        if self.running:
            return self
        sock = self._bind()
        server = self._make_server()
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"doitong-emulator-{self._port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Doitong emulator did not start on {self.base_url}")
            time.sleep(0.005)
        self._wait_answering(deadline)
        log.info("Doitong emulator listening on %s", self.base_url)
        return self

    def _wait_answering(self, deadline: float) -> None:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        while True:
            try:
                connection = http.client.HTTPConnection(host, self._port, timeout=2)
                try:
                    connection.request("GET", "/_emulator/health")
                    if connection.getresponse().status == 200:
                        return
                finally:
                    connection.close()
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Doitong emulator on {self.base_url} does not answer")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end (state is kept)."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        if thread.is_alive():
            log.warning("The Doitong emulator thread on port %d did not stop", self._port)
        self._server = None
        self._thread = None

    def restart(self) -> None:
        """Stop the HTTP server and start it again on the same port, keeping all state."""
        self.stop()
        self.start()

    def serve_forever(self, *, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve in the calling thread until SIGINT/SIGTERM (used by the CLI).

        :param on_ready: called with the base URL once the port is listening.
        """
        sock = self._bind()
        self._server = self._make_server()
        if on_ready is not None:
            on_ready(self.base_url)
        try:
            self._server.run(sockets=[sock])
        finally:
            self._server = None

    def __enter__(self) -> DoitongEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"DoitongEmulator(base_url={self.base_url!r}, accounts={[a.name for a in self.accounts]})"
