"""Fixtures for the client tests: one emulator with special accounts, and sync/async clients alike."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from doitong_emulator import DoitongEmulator, EmulatorAccount, FaultConfig
from doitong_emulator.pytest_plugin import EmulatorFactory

from .doitong_support import FAST, JOB_SECONDS, SPECIAL_ACCOUNTS, TIME_SCALE, Api, AsyncApi, MakeApi, SyncApi


@pytest.fixture(scope="session")
def shared_emulator(doitong_emulators: EmulatorFactory) -> Iterator[DoitongEmulator]:
    with doitong_emulators(
        plan="pro", time_scale=TIME_SCALE, job_seconds=JOB_SECONDS, credits=100_000
    ) as emu:
        for name, fields in SPECIAL_ACCOUNTS.items():
            emu.add_account(EmulatorAccount(name=name, plan="pro", **{"credits": 100_000, **fields}))
        yield emu


@pytest.fixture
def emu(shared_emulator: DoitongEmulator) -> Iterator[DoitongEmulator]:
    """The shared emulator, with no faults, no jobs and an empty request log."""
    shared_emulator.set_faults(FaultConfig())
    shared_emulator.reset()
    yield shared_emulator
    shared_emulator.set_faults(FaultConfig())
    if not shared_emulator.running:
        shared_emulator.start()


@pytest.fixture(params=["sync", "async"])
def make_api(request: pytest.FixtureRequest, shared_emulator: DoitongEmulator) -> Iterator[MakeApi]:
    """Build the sync or the async client (the same test body runs over both)."""
    made: list[Api] = []

    def make(**kwargs: Any) -> Api:
        kwargs.setdefault("api_key", shared_emulator.api_key)
        kwargs.setdefault("base_url", shared_emulator.base_url)
        kwargs.setdefault("retry_policy", FAST)
        kwargs.setdefault("timeout", 5.0)
        api: Api = SyncApi(**kwargs) if request.param == "sync" else AsyncApi(**kwargs)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()
