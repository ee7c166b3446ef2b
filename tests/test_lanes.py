"""The unit lane (``tests/lanes.py``): which tests it holds, and what it refuses while they run."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import lanes


class _Item:
    """What :func:`lanes.is_unit` reads of a collected test: its fixtures and its marks."""

    def __init__(self, fixtures: list[str], marks: tuple[str, ...] = ()) -> None:
        self.fixturenames = fixtures
        self.marks = marks

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.marks else None


@pytest.mark.parametrize(
    ("fixtures", "marks", "unit"),
    [
        (["tmp_path", "monkeypatch"], (), True),
        (["tmp_path", "doitong_conn", "emulator", "doitong_emulators"], (), False),  # starts an emulator
        (["tmp_path"], ("integration",), False),  # starts what it needs itself
        (["tmp_path"], ("e2e",), False),
    ],
)
def test_a_test_is_unit_unless_its_fixtures_or_marks_say_otherwise(
    fixtures: list[str], marks: tuple[str, ...], unit: bool
) -> None:
    assert lanes.is_unit(_Item(fixtures, marks)) is unit  # type: ignore[arg-type]


def test_internet_sockets_are_refused_and_local_ones_pass(tmp_path: Path) -> None:
    guard = lanes._Guard(str(tmp_path / "airflow.db"))
    connect = guard.sockets(socket.socket.connect, "connect")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(pytest.fail.Exception, match="mark it @pytest.mark.integration"):
            connect(sock, ("127.0.0.1", 9))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        with pytest.raises(FileNotFoundError):  # passed on to the real connect
            connect(sock, str(tmp_path / "no-such-socket"))
    assert guard.tried == ["socket connect ('127.0.0.1', 9)"]


def test_processes_and_airflows_database_are_refused(tmp_path: Path) -> None:
    database = tmp_path / "airflow.db"
    guard = lanes._Guard(str(database))
    with pytest.raises(pytest.fail.Exception, match="a subprocess"):
        guard.processes(subprocess.Popen._execute_child)(None, ["true"])  # type: ignore[attr-defined]
    connect = guard.databases(sqlite3.connect)
    with pytest.raises(pytest.fail.Exception, match="Airflow's database"):
        connect(database)
    connect(tmp_path / "other.db").close()
    assert len(guard.tried) == 2


def test_the_unit_lane_refuses_what_it_does_not_hold(request: pytest.FixtureRequest) -> None:
    """Under ``--unit`` the guard is in place for the whole session (the refusal is caught here)."""
    guard: Any = request.getfixturevalue("lane_guard")
    if guard is None:
        pytest.skip("the guard is only in place under --unit")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(pytest.fail.Exception):
            sock.bind(("127.0.0.1", 0))
    with pytest.raises(pytest.fail.Exception):
        subprocess.run(["true"], check=False)
    guard.tried.clear()  # refused as it should be: not this test's failure
