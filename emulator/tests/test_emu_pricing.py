"""The ``charge_factor`` option: a vendor that charges more than the contract's price."""

from __future__ import annotations

import pytest

from doitong_emulator import FaultConfig


def test_charge_factor_charges_more_than_the_price(emu, api):
    emu.set_faults(FaultConfig(charge_factor=2.5))
    job = api.submit(quality="high").json()["data"]["generateimage"]
    assert job["creditCost"] == 50  # 20, the contract's price, times 2.5
    assert api.credits() == 100_000 - 50
    emu.set_faults(FaultConfig())  # off by default: the contract's price again
    job = api.submit(quality="high").json()["data"]["generateimage"]
    assert job["creditCost"] == 20 and api.credits() == 100_000 - 70


def test_charge_factor_must_be_positive():
    with pytest.raises(ValueError, match="charge_factor must be positive"):
        FaultConfig(charge_factor=0)
    assert FaultConfig.from_dict({"charge_factor": "3"}).charge_factor == 3.0
