"""Hostile answers from the emulator, through both clients: time headers in milliseconds, a status
answer too large to hold, creditCost that is not a count, an output host that parses two ways."""

from __future__ import annotations

import time

import pytest

from airflow_provider_doitong.client import (
    DoitongAnswerTooLarge,
    DoitongUntrustedOutput,
    ImageRequest,
)
from airflow_provider_doitong.client.contract import MAX_ANSWER_BYTES
from doitong_emulator import FaultConfig

from .doitong_support import MakeApi, log_of

REQUEST = ImageRequest(provider="flux-krea", prompt="a lighthouse", width=256, height=256)


@pytest.mark.parametrize("form", ["epoch_ms", "absurd"])
def test_a_wait_is_not_frozen_by_odd_reset_headers(emu, make_api: MakeApi, form: str) -> None:
    emu.set_faults(FaultConfig(time_headers=form))
    api = make_api()
    job = api.submit(REQUEST)
    started = time.monotonic()
    done = api.wait_for_job(job.id, poll_interval=0.01, deadline=time.time() + 8)
    assert done.status.value == "completed"
    assert time.monotonic() - started < 6
    limit = api.last_rate_limit
    assert limit is not None and limit.reset_at is not None and limit.reset_at <= time.time() + 61


def test_a_huge_status_answer_stops_at_the_cap(emu, make_api: MakeApi) -> None:
    api = make_api()
    job = api.submit(REQUEST)
    emu.set_faults(FaultConfig(huge_answer_mib=40))
    with pytest.raises(DoitongAnswerTooLarge, match=f"larger than {MAX_ANSWER_BYTES} bytes"):
        api.get_job(job.id)
    emu.set_faults(FaultConfig())
    assert api.get_job(job.id) is not None  # the connection pool still works


@pytest.mark.parametrize("form", ["string", "negative"])
def test_a_credit_cost_that_is_not_a_count_is_unknown(emu, make_api: MakeApi, form: str) -> None:
    emu.set_faults(FaultConfig(credit_cost_as=form))
    api = make_api()
    job = api.submit(REQUEST)
    assert job.credit_cost is None
    done = api.wait_for_job(job.id, poll_interval=0.01, deadline=time.time() + 8)
    assert done.credit_cost is None and done.status.value == "completed"


def test_an_output_host_read_two_ways_is_never_contacted(emu, make_api: MakeApi) -> None:
    emu.set_faults(FaultConfig(two_way_output_host="127.0.0.1"))
    api = make_api()
    done = api.wait_for_job(api.submit(REQUEST).id, poll_interval=0.01, deadline=time.time() + 8)
    assert done.url.startswith("https://127.0.0.1\\.cdn.doitong.com/")
    with pytest.raises(DoitongUntrustedOutput, match="backslash"):
        api.download(done.url)
    assert log_of(emu, "download") == []
