"""The test lanes: ``pytest --unit`` (``python3 dev.py test --unit``) and the whole suite.

A test is in the unit lane unless it needs a server, Airflow's database or a subprocess. That is
decided here, at collection, from two things: the fixtures the test uses (anything in
:data:`INTEGRATION_FIXTURES`, directly or through another fixture, such as the emulator) and an
explicit ``integration`` mark (on the test, its class or its module) for a test that starts what it
needs itself (``DoitongEmulator(...)`` in its body, ``dag.test()``, ``subprocess``). Every other test
gets the ``unit`` mark.

In the unit lane the mark is checked, not trusted: :func:`lane_guard` refuses, for the whole session,
an internet socket's ``connect`` or ``bind``, a new process and a connection to Airflow's database. A
test that does one of these fails with a message naming what it did and the mark it needs, so the lane
stays what it says as tests are added. The whole suite (no ``--unit``) runs every test, unguarded.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

#: Fixtures that start a server (the emulator, a webhook receiver, a real Airflow) or need Airflow's
#: database: a test using any of them, directly or through another fixture, is not a unit test.
INTEGRATION_FIXTURES = frozenset(
    {
        "doitong_emulators",  # the emulator's pytest plugin: every fixture that starts an emulator
        "receiver",  # emulator/tests/conftest.py: a webhook receiver on loopback
        "fault_cluster",  # tests/faults/conftest.py: a real Airflow
    }
)

#: Marks that say a test is not a unit test (``integration``, or one of the suites that start Airflow).
INTEGRATION_MARKS = ("integration", "e2e", "faults", "ui")

_WHY = "a test that does this belongs outside the unit lane: mark it @pytest.mark.integration"


def add_options(parser: pytest.Parser) -> None:
    parser.addoption(
        "--unit",
        action="store_true",
        default=False,
        help="run only the unit lane: the tests that need no server, no Airflow database, no subprocess",
    )


def is_unit(item: pytest.Item) -> bool:
    """Whether ``item`` belongs to the unit lane (see the module's docstring)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    if fixtures & INTEGRATION_FIXTURES:
        return False
    return not any(item.get_closest_marker(mark) for mark in INTEGRATION_MARKS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the unit lane's tests ``unit``; with ``--unit``, deselect the others."""
    unit, others = [], []
    for item in items:
        if is_unit(item):
            item.add_marker(pytest.mark.unit)
            unit.append(item)
        else:
            others.append(item)
    if config.getoption("unit"):
        config.hook.pytest_deselected(items=others)
        items[:] = unit


class _Guard:
    """What the unit lane refuses, and what a test tried anyway (checked after each test)."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.tried: list[str] = []

    def refuse(self, what: str) -> None:
        self.tried.append(what)
        pytest.fail(f"unit lane: {what}; {_WHY}", pytrace=True)

    def sockets(self, original: Callable[..., Any], verb: str) -> Callable[..., Any]:
        guard = self

        def guarded(sock: socket.socket, address: Any, *args: Any) -> Any:
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                guard.refuse(f"socket {verb} {address!r}")
            return original(sock, address, *args)

        return guarded

    def processes(self, original: Callable[..., Any]) -> Callable[..., Any]:
        guard = self

        def guarded(popen: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> Any:
            guard.refuse(f"a subprocess {args!r}")

        return guarded

    def databases(self, original: Callable[..., Any]) -> Callable[..., Any]:
        guard = self

        def guarded(database: Any, *args: Any, **kwargs: Any) -> Any:
            if os.fspath(database) == guard.database:
                guard.refuse(f"Airflow's database {database}")
            return original(database, *args, **kwargs)

        return guarded


@pytest.fixture(scope="session", autouse=True)
def lane_guard(request: pytest.FixtureRequest) -> Iterator[_Guard | None]:
    """With ``--unit``, refuse internet sockets, subprocesses and Airflow's database for the session."""
    if not request.config.getoption("unit"):
        yield None
        return
    # croniter (imported by Airflow's DAG) asks ``file`` for the interpreter's word size when imported.
    import croniter  # noqa: F401

    database = os.path.join(os.environ["AIRFLOW_HOME"], "airflow.db")
    guard = _Guard(database)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", guard.sockets(socket.socket.connect, "connect"))
        patch.setattr(socket.socket, "connect_ex", guard.sockets(socket.socket.connect_ex, "connect"))
        patch.setattr(socket.socket, "bind", guard.sockets(socket.socket.bind, "bind"))
        patch.setattr(subprocess.Popen, "_execute_child", guard.processes(subprocess.Popen._execute_child))  # type: ignore[attr-defined]
        patch.setattr(os, "fork", lambda: guard.refuse("os.fork()"))
        patch.setattr(os, "system", lambda command: guard.refuse(f"os.system({command!r})"))
        patch.setattr(sqlite3, "connect", guard.databases(sqlite3.connect))
        patch.setattr(sqlite3.dbapi2, "connect", guard.databases(sqlite3.dbapi2.connect))
        yield guard


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture(autouse=True)
def _lane_check(lane_guard: _Guard | None, request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a unit test that tried what the lane refuses and caught the refusal (or a thread did)."""
    if lane_guard is None:
        yield
        return
    lane_guard.tried.clear()
    yield
    if lane_guard.tried and not request.node.stash.get(_FAILED, False):
        pytest.fail(f"unit lane: {'; '.join(lane_guard.tried)}; {_WHY}")
