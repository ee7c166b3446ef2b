"""Hostile values: time headers in milliseconds or absurd, creditCost as a string or negative, an
output host that parses two ways, a huge streamed status answer, a slot held by another client."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
import requests

from doitong_emulator import FaultConfig
from doitong_emulator.cli import build_parser
from doitong_emulator.hostile_values import ABSURD_RESET, ABSURD_RETRY_AFTER


def test_every_value_option_is_off_by_default(api):
    response = api.submit(width=256, height=256)
    job = response.json()["data"]["generateimage"]
    assert isinstance(job["creditCost"], int) and job["creditCost"] > 0
    reset = float(response.headers["x-ratelimit-reset"])
    assert time.time() - 1 <= reset <= time.time() + 61


def test_time_headers_in_epoch_milliseconds(emu, api):
    emu.set_faults(FaultConfig(time_headers="epoch_ms"))
    response = api.submit(width=256, height=256)
    reset_ms = int(response.headers["x-ratelimit-reset"])
    assert reset_ms / 1000 == pytest.approx(time.time(), abs=61)


def test_retry_after_in_epoch_milliseconds_on_a_refusal(emu, api):
    emu.set_faults(FaultConfig(time_headers="epoch_ms", error_429_rate=1.0))
    response = api.submit(width=256, height=256)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) / 1000 == pytest.approx(time.time(), abs=5)


def test_absurd_time_headers(emu, api):
    emu.set_faults(FaultConfig(time_headers="absurd", error_429_rate=1.0))
    response = api.submit(width=256, height=256)
    assert response.status_code == 429
    assert response.headers["x-ratelimit-reset"] == ABSURD_RESET
    assert response.headers["retry-after"] == ABSURD_RETRY_AFTER


@pytest.mark.parametrize(("form", "check"), [("string", str.isdigit), ("negative", lambda v: v < 0)])
def test_credit_cost_forms(emu, api, form, check):
    emu.set_faults(FaultConfig(credit_cost_as=form))
    job_id = api.submit_id(width=256, height=256)
    assert check(api.wait(job_id)["creditCost"])


def test_output_host_parses_two_ways(emu, api):
    emu.set_faults(FaultConfig(two_way_output_host="evil.example"))
    url = api.wait(api.submit_id(width=256, height=256))["url"]
    assert url.startswith("https://evil.example\\.cdn.doitong.com/outputs/")
    assert urlsplit(url).hostname.endswith(".cdn.doitong.com")  # what urllib.parse judges


def test_huge_status_answer_is_streamed(emu, api):
    job_id = api.submit_id(width=256, height=256)
    emu.set_faults(FaultConfig(huge_answer_mib=600))
    got = 0
    with api.session.get(
        f"{emu.base_url}/v1/jobs/{job_id}", headers={"X-API-Key": api.api_key}, stream=True, timeout=10
    ) as response:
        assert response.status_code == 200 and "content-length" not in response.headers
        for chunk in response.iter_content(1 << 20):
            got += len(chunk)
            if got > 8 << 20:
                break
    assert got > 8 << 20


@pytest.mark.integration
def test_a_slot_held_by_another_client(make_api):
    from doitong_emulator import DoitongEmulator

    with DoitongEmulator(plan="free", time_scale=0.01, job_seconds=1) as emu:
        api = make_api(emu)
        emu.set_faults(FaultConfig(hold_slot_s=30, stale_reset_s=5))
        response = api.submit(width=256, height=256)
        assert response.status_code == 429
        assert response.json()["errors"][0]["extensions"]["code"] == "CONCURRENCY_LIMIT"
        assert "retry-after" not in response.headers
        assert float(response.headers["x-ratelimit-reset"]) < time.time()
        emu.set_faults(FaultConfig())
        assert api.submit(width=256, height=256).status_code == 200


@pytest.mark.parametrize(
    "options",
    [
        {"time_headers": "weekly"},
        {"credit_cost_as": "float"},
        {"huge_answer_mib": -1},
        {"hold_slot_s": -1},
        {"two_way_output_host": "a/b"},
    ],
)
def test_value_options_are_checked(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        FaultConfig(**options)


def test_value_options_through_the_admin_endpoint_and_cli(emu):
    body = {
        "time_headers": "epoch_ms",
        "credit_cost_as": "string",
        "huge_answer_mib": "2",
        "hold_slot_s": "1",
    }
    assert requests.post(f"{emu.base_url}/_emulator/faults", json=body, timeout=10).status_code == 200
    assert emu.faults == FaultConfig(
        time_headers="epoch_ms", credit_cost_as="string", huge_answer_mib=2, hold_slot_s=1.0
    )
    args = build_parser().parse_args(
        [
            "--time-headers",
            "absurd",
            "--credit-cost-as",
            "negative",
            "--huge-answer-mib",
            "600",
            "--two-way-output-host",
            "evil.example",
            "--hold-slot",
            "8",
        ]
    )
    assert (args.time_headers, args.credit_cost_as, args.huge_answer_mib) == ("absurd", "negative", 600)
    assert (args.two_way_output_host, args.hold_slot) == ("evil.example", 8.0)
