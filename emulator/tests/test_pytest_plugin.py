"""The ``doitong_emulator`` fixture reaches any test of a project that installs the package."""

from __future__ import annotations

from typing import Any

import requests


def test_the_packaged_fixture_serves_the_api(doitong_emulator: Any) -> None:
    answer = requests.get(
        f"{doitong_emulator.base_url}/v1/account", headers={"X-API-Key": doitong_emulator.api_key}, timeout=10
    )
    assert answer.status_code == 200
    assert answer.json()["data"]["account"] == {"plan": "pro", "credits": 100_000}
