"""A local Doitong API emulator: a real HTTP server speaking the contract, for offline tests and demos.

>>> from doitong_emulator import DoitongEmulator
>>> with DoitongEmulator(time_scale=0.05, job_seconds=20) as emu:  # doctest: +SKIP
...     emu.base_url, emu.api_key
"""

from __future__ import annotations

__version__ = "0.1.0"

from doitong_emulator.accounts import UNLIMITED, EmulatorAccount
from doitong_emulator.faults import FaultConfig
from doitong_emulator.server import DoitongEmulator

__all__ = ["UNLIMITED", "DoitongEmulator", "EmulatorAccount", "FaultConfig"]
