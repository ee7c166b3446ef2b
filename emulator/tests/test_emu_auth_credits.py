"""Authentication (both headers, several accounts) and credits (debit, refund, 402)."""

from __future__ import annotations

import pytest
import requests

from airflow_provider_doitong.client.contract import credit_cost
from doitong_emulator import DoitongEmulator, EmulatorAccount, FaultConfig

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


QUERY = "{ account { plan credits } }"


def test_graphql_takes_the_bearer_header(emu, api):
    assert api.gql(QUERY).json()["data"]["account"]["plan"] == "pro"
    wrong_header = requests.post(
        f"{emu.base_url}/graphql", json={"query": QUERY}, headers={"X-API-Key": emu.api_key}, timeout=5
    )
    assert wrong_header.status_code == 401
    wrong_scheme = requests.post(
        f"{emu.base_url}/graphql",
        json={"query": QUERY},
        headers={"Authorization": f"Basic {emu.api_key}"},
        timeout=5,
    )
    assert wrong_scheme.status_code == 401


def test_rest_takes_the_api_key_header(emu, api):
    assert api.account().status_code == 200
    bearer = requests.get(
        f"{emu.base_url}/v1/account", headers={"Authorization": f"Bearer {emu.api_key}"}, timeout=5
    )
    assert bearer.status_code == 401


def test_wrong_and_missing_keys_are_401_without_rate_headers(emu, api):
    for response in (
        api.account(api_key="wrong-key"),
        requests.get(f"{emu.base_url}/v1/account", timeout=5),
        api.gql(QUERY, api_key="wrong-key"),
        requests.post(f"{emu.base_url}/graphql", json={"query": QUERY}, timeout=5),
        api.submit(api_key="wrong-key"),
    ):
        assert response.status_code == 401
        error = response.json()["errors"][0]
        assert error["extensions"]["code"] == "UNAUTHENTICATED"
        assert "wrong-key" not in error["message"]
        assert "X-RateLimit-Limit" not in response.headers
    assert emu.stats()["jobs"]["total"] == 0


def test_accounts_are_isolated(make_api):
    accounts = [
        EmulatorAccount(api_key="key-a", plan="pro", credits=500, name="alice"),
        EmulatorAccount(api_key="key-b", plan="free", credits=300, name="bob", webhook_secret="bob-secret"),
    ]
    with DoitongEmulator(accounts=accounts, time_scale=0.5, job_seconds=5) as emu:
        alice, bob = make_api(emu, "key-a"), make_api(emu, "key-b")
        job_id = alice.submit_id()
        assert alice.credits() == 490
        assert bob.credits() == 300
        assert bob.job(job_id).status_code == 404
        assert alice.job(job_id).status_code == 200
        assert bob.gql(QUERY).json()["data"]["account"] == {"plan": "free", "credits": 300}
        assert alice.account().headers["X-RateLimit-Limit"] == "60"
        assert bob.account().headers["X-RateLimit-Limit"] == "10"
        assert alice.account().headers["X-RateLimit-Remaining"] == "55"
        assert bob.account().headers["X-RateLimit-Remaining"] == "5"
        emu.add_account(api_key="key-c", plan="starter", credits=42, name="carol")
        carol = make_api(emu, "key-c")
        assert carol.account().json()["data"]["account"] == {"plan": "starter", "credits": 42}
        assert emu.stats()["credits"] == {"alice": 490, "bob": 300, "carol": 42}
        assert [a.name for a in emu.accounts] == ["alice", "bob", "carol"]


def test_credits_are_debited_with_the_contract_price(api):
    expected = 100_000
    for provider, width, height, quality in [
        ("flux-krea", 1024, 1024, "standard"),
        ("flux-krea", 1024, 1024, "high"),
        ("flux-krea", 2048, 2048, "standard"),
        ("flux-krea", 2048, 1024, "high"),
        ("flux-dev", 512, 512, "standard"),
    ]:
        job = api.submit(service=provider, width=width, height=height, quality=quality).json()["data"][
            "generateimage"
        ]
        cost = credit_cost(provider=provider, width=width, height=height, quality=quality)
        assert job["creditCost"] == cost
        expected -= cost
        assert api.credits() == expected


def test_insufficient_credits_is_402_with_the_numbers(make_api):
    with DoitongEmulator(credits=25, time_scale=0.02, job_seconds=5) as emu:
        client = make_api(emu)
        assert client.submit(quality="high").status_code == 200
        response = client.submit(quality="high")
        assert response.status_code == 402
        assert response.json() == {
            "errors": [
                {
                    "message": "Insufficient credits for this operation",
                    "extensions": {
                        "code": "INSUFFICIENT_CREDITS",
                        "creditsRequired": 20,
                        "creditsAvailable": 5,
                    },
                }
            ]
        }
        assert "X-RateLimit-Remaining" in response.headers
        assert client.credits() == 5
        assert emu.stats()["jobs"]["total"] == 1


def test_failed_jobs_are_refunded(emu, api):
    emu.set_faults(FaultConfig(fail_job_rate=1.0))
    job_id = api.submit_id(quality="high")
    assert api.credits() == 100_000 - 20
    job = api.wait(job_id)
    assert job["status"] == "failed"
    assert job["url"] is None
    assert job["error"] == {"code": "GENERATION_FAILED", "message": "The model failed to generate an image"}
    assert api.credits() == 100_000
    stats = emu.stats()
    assert stats["jobs"]["failed"] == 1 and stats["jobs"]["completed"] == 0
    assert stats["credits"]["default"] == 100_000
