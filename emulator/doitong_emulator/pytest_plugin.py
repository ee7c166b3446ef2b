"""A pytest plugin, registered by the package (``pytest11``): the ``doitong_emulator`` fixture.

It provides the ``doitong_emulator`` fixture, a fresh :class:`DoitongEmulator` per test running
at a small time scale (a 5 s job takes 0.1 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from doitong_emulator.server import DoitongEmulator

#: The fixture's time scale and emulated job length.
FIXTURE_TIME_SCALE = 0.02
FIXTURE_JOB_SECONDS = 5.0


@pytest.fixture
def doitong_emulator() -> Iterator[DoitongEmulator]:
    """A running emulator (plan ``pro``, key ``emulator-key``) for one test.

    The emulator is imported here, not at plugin load, so pytest runs without the ``emulator`` extra.
    """
    from doitong_emulator.server import DoitongEmulator

    with DoitongEmulator(time_scale=FIXTURE_TIME_SCALE, job_seconds=FIXTURE_JOB_SECONDS) as emulator:
        yield emulator
