"""The ``doitong_emulator`` fixture reaches any test of a project that installs the package."""

from __future__ import annotations

from typing import Any

import pytest
import requests


def test_the_packaged_fixture_serves_the_api(doitong_emulator: Any) -> None:
    answer = requests.get(
        f"{doitong_emulator.base_url}/v1/account", headers={"X-API-Key": doitong_emulator.api_key}, timeout=10
    )
    assert answer.status_code == 200
    assert answer.json()["data"]["account"] == {"plan": "pro", "credits": 100_000}


def test_the_factory_starts_emulators_with_their_settings_until_the_block_ends(
    doitong_emulators: Any,
) -> None:
    with doitong_emulators(plan="free", credits=7, api_key="sk-one") as emulator:
        url = f"{emulator.base_url}/v1/account"
        answer = requests.get(url, headers={"X-API-Key": "sk-one"}, timeout=10)
        assert answer.json()["data"]["account"] == {"plan": "free", "credits": 7}
    with pytest.raises(requests.ConnectionError):
        requests.get(url, headers={"X-API-Key": "sk-one"}, timeout=10)
