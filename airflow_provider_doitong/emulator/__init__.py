"""A local Doitong API emulator: a real HTTP server speaking the contract, for offline tests and demos.

>>> from airflow_provider_doitong.emulator import DoitongEmulator
>>> with DoitongEmulator(time_scale=0.05, job_seconds=20) as emu:  # doctest: +SKIP
...     emu.base_url, emu.api_key
"""

from __future__ import annotations

from airflow_provider_doitong.emulator.accounts import UNLIMITED, EmulatorAccount
from airflow_provider_doitong.emulator.faults import FaultConfig
from airflow_provider_doitong.emulator.server import DoitongEmulator

__all__ = ["UNLIMITED", "DoitongEmulator", "EmulatorAccount", "FaultConfig"]
