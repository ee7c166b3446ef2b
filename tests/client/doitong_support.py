"""Helpers for the client tests: sync and async clients behind one calling convention, and log readers."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from airflow_provider_doitong.client import AsyncDoitongClient, DoitongClient, RetryPolicy

#: The emulator's time scale here: a 20 s job takes 0.1 s, a rate-limit window 0.3 s.
TIME_SCALE = 0.005
WINDOW_SECONDS = 60 * TIME_SCALE
JOB_SECONDS = 20

#: Accounts beside the default one, by name: (key, overrides).
SPECIAL_ACCOUNTS: dict[str, dict[str, Any]] = {
    "poor": {"api_key": "key-poor-0001", "credits": 5},
    "slow": {"api_key": "key-slow-0001", "requests_per_minute": 1},
    "single": {"api_key": "key-single-0001", "concurrent_jobs": 1},
    "daily": {"api_key": "key-daily-0001", "daily_limit": 1},
}

#: A policy for tests: quick backoff, four attempts in all.
FAST = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.02, max_rate_limit_wait=5.0)


class SyncApi:
    """The sync client as the tests call it."""

    kind = "sync"

    def __init__(self, **kwargs: Any) -> None:
        self.client = DoitongClient(**kwargs)
        self.requests_seen: list[tuple[str, str, dict[str, str]]] = []
        self.client._session.hooks["response"].append(self._observe)

    def _observe(self, response: Any, *args: Any, **kwargs: Any) -> None:
        request = response.request
        self.requests_seen.append((request.method, request.path_url, dict(request.headers)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def close(self) -> None:
        self.client.close()


class AsyncApi:
    """The async client, each coroutine method run to completion on one private event loop."""

    kind = "async"

    def __init__(self, **kwargs: Any) -> None:
        self.client = AsyncDoitongClient(**kwargs)
        self.runner = asyncio.Runner()
        self.requests_seen: list[tuple[str, str, dict[str, str]]] = []
        self.client._http.event_hooks["request"].append(self._observe)

    async def _observe(self, request: Any) -> None:
        path = request.url.raw_path.decode()
        self.requests_seen.append((request.method, path, dict(request.headers)))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if inspect.iscoroutinefunction(attr):

            @functools.wraps(attr)
            def call(*args: Any, **kwargs: Any) -> Any:
                return self.runner.run(_settled(attr(*args, **kwargs)))

            return call
        return attr

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.close()


async def _settled(call: Awaitable[Any]) -> Any:
    """Await ``call``, then let the loop run what it left ready before the runner stops it.

    A closed transport shuts its socket a ``call_soon`` later; a loop stopped at once would keep the
    socket open until the next call, where a running loop (a triggerer's) closes it at once.
    """
    try:
        return await call
    finally:
        for _ in range(2):
            await asyncio.sleep(0)


Api = SyncApi | AsyncApi
MakeApi = Callable[..., Api]


def key_of(name: str) -> str:
    """The API key of a special account.

    :param name: its name in :data:`SPECIAL_ACCOUNTS`.
    """
    return SPECIAL_ACCOUNTS[name]["api_key"]


def log_of(emu: Any, kind: str | None = None) -> list[dict[str, Any]]:
    """The emulator's request log, optionally of one kind (``submit``, ``status``...).

    :param emu: the emulator.
    :param kind: the request kind.
    """
    return [entry for entry in emu.request_log() if kind is None or entry["kind"] == kind]


def statuses(emu: Any, kind: str | None = None) -> list[int]:
    """The HTTP statuses the emulator answered, in order (0: connection dropped).

    :param emu: the emulator.
    :param kind: the request kind.
    """
    return [entry["status"] for entry in log_of(emu, kind)]
