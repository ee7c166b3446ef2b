"""A pytest plugin, registered by the package (``pytest11``): emulators for tests.

``doitong_emulators`` starts emulators with any settings, from a fixture of any scope or a test;
``doitong_emulator`` is a fresh :class:`DoitongEmulator` per test running at a small time scale (a
5 s job takes 0.1 s).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from doitong_emulator.server import DoitongEmulator

#: The ``doitong_emulator`` fixture's time scale and emulated job length.
FIXTURE_TIME_SCALE = 0.02
FIXTURE_JOB_SECONDS = 5.0


class EmulatorFactory:
    """Starts emulators: ``with doitong_emulators(plan="free", time_scale=0.1) as emu: ...``.

    The settings are :class:`DoitongEmulator`'s own, passed as given (its defaults otherwise); the
    emulator serves on loopback until the ``with`` ends.
    """

    @contextlib.contextmanager
    def __call__(self, **settings: Any) -> Iterator[DoitongEmulator]:
        from doitong_emulator.server import DoitongEmulator

        with DoitongEmulator(**settings) as emulator:
            yield emulator


@pytest.fixture(scope="session")
def doitong_emulators() -> EmulatorFactory:
    """The one way the tests start emulators, for fixtures of any scope and for tests.

    The emulator is imported when one starts, not at plugin load, so pytest runs without it.
    """
    return EmulatorFactory()


@pytest.fixture
def doitong_emulator(doitong_emulators: EmulatorFactory) -> Iterator[DoitongEmulator]:
    """A running emulator (plan ``pro``, key ``emulator-key``) for one test."""
    with doitong_emulators(time_scale=FIXTURE_TIME_SCALE, job_seconds=FIXTURE_JOB_SECONDS) as emulator:
        yield emulator
