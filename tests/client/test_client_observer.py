"""What the sync and async clients tell their observer, over real HTTP to the emulator."""

from __future__ import annotations

import pytest

from airflow_provider_doitong.client import (
    DoitongInsufficientCredits,
    DoitongRateLimited,
    ImageRequest,
    RetryPolicy,
)
from airflow_provider_doitong.client import observability as obs
from doitong_emulator import DoitongEmulator, FaultConfig
from tests.observability.recorder import RecordingObserver

from .doitong_support import MakeApi, key_of

REQUEST = ImageRequest(provider="flux-dev", prompt="a kite over the dunes", width=512, height=512)


def test_submissions_status_reads_and_429s_are_counted(make_api: MakeApi, emu: DoitongEmulator) -> None:
    seen = RecordingObserver()
    api = make_api(observer=seen)
    job = api.submit(REQUEST)
    assert api.get_jobs([job.id, "job-unknown"])[job.id] is not None
    assert seen.counts[(obs.JOBS_SUBMITTED, "flux-dev", None)] == 1
    assert seen.counts[(obs.CREDITS_ESTIMATED, "flux-dev", None)] == REQUEST.estimated_credits
    assert seen.total(obs.STATUS_REQUESTS) == 1  # one coalesced read for both ids
    emu.set_faults(FaultConfig(error_429_rate=1.0))
    with pytest.raises(DoitongRateLimited):
        api.submit(REQUEST, retry_policy=RetryPolicy(max_rate_limit_wait=0))
    assert seen.counts[(obs.JOBS_REFUSED, "flux-dev", "rate_limited")] == 1
    assert seen.total(obs.RATE_LIMITED) == 1
    assert seen.total(obs.JOBS_SUBMITTED) == 1
    answered_429 = [r for r in emu.request_log() if r["status"] == 429]
    assert seen.total(obs.RATE_LIMITED) == len(answered_429)


def test_a_refusal_is_counted_by_its_kind_and_nothing_is_submitted(
    make_api: MakeApi, emu: DoitongEmulator
) -> None:
    seen = RecordingObserver()
    api = make_api(observer=seen, api_key=key_of("poor"))
    with pytest.raises(DoitongInsufficientCredits):
        api.submit(ImageRequest(provider="flux-krea", prompt="a harbour at night", quality="high"))
    assert dict(seen.counts) == {(obs.JOBS_REFUSED, "flux-krea", "insufficient_credits"): 1}


def test_without_an_observer_nothing_is_reported_and_nothing_fails(
    make_api: MakeApi, emu: DoitongEmulator
) -> None:
    api = make_api()
    assert api.observer is obs.NO_OBSERVER
    assert api.get_job(api.submit(REQUEST).id) is not None
