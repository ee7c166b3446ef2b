"""A local Doitong API emulator: a real HTTP server speaking the contract, for offline tests and demos.

>>> from doitong_emulator import DoitongEmulator
>>> with DoitongEmulator(time_scale=0.05, job_seconds=20) as emu:  # doctest: +SKIP
...     emu.base_url, emu.api_key

The names below are imported on first use, so that loading the package (as pytest does for its
plugin, before a test session measures coverage) imports neither the server nor the provider's
client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from doitong_emulator.accounts import UNLIMITED, EmulatorAccount
    from doitong_emulator.faults import FaultConfig
    from doitong_emulator.server import DoitongEmulator

#: Each public name and the module that defines it.
_HOMES = {
    "UNLIMITED": "doitong_emulator.accounts",
    "EmulatorAccount": "doitong_emulator.accounts",
    "FaultConfig": "doitong_emulator.faults",
    "DoitongEmulator": "doitong_emulator.server",
}

__all__ = ["UNLIMITED", "DoitongEmulator", "EmulatorAccount", "FaultConfig"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
