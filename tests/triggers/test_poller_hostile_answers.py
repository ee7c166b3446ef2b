"""The shared poller against hostile answers from the emulator: reset headers in milliseconds or
absurd do not stretch its pace, and an answer too large to hold is never read whole."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_doitong.client import (
    AsyncDoitongClient,
    DoitongAnswerTooLarge,
    ImageRequest,
    RetryPolicy,
)
from airflow_provider_doitong.triggers.poller import JobPoller
from doitong_emulator import DoitongEmulator, FaultConfig
from doitong_emulator.pytest_plugin import EmulatorFactory

FAST = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02)
REQUEST = ImageRequest(provider="flux-krea", prompt="a lighthouse", width=256, height=256)


@pytest.fixture(scope="module")
def emu(doitong_emulators: EmulatorFactory) -> Iterator[DoitongEmulator]:
    with doitong_emulators(plan="pro", time_scale=0.01, job_seconds=20, credits=100_000) as emulator:
        yield emulator


def _poller(emu: DoitongEmulator, **kwargs: Any) -> JobPoller:
    async def make() -> AsyncDoitongClient:
        return AsyncDoitongClient(api_key=emu.api_key, base_url=emu.base_url, retry_policy=FAST)

    return JobPoller(key=f"hostile-{id(kwargs)}", client_factory=make, retry_policy=FAST, **kwargs)


async def _watch(poller: JobPoller, job_id: str) -> list[str]:
    return [job.raw_status async for job in poller.watch(job_id, poll_interval=0.05)]


@pytest.mark.parametrize("form", ["epoch_ms", "absurd"])
def test_odd_reset_headers_do_not_stretch_the_poll_interval(emu: DoitongEmulator, form: str) -> None:
    async def main() -> list[str]:
        async with AsyncDoitongClient(api_key=emu.api_key, base_url=emu.base_url) as client:
            job = await client.submit(REQUEST)
        emu.set_faults(FaultConfig(time_headers=form))
        return await asyncio.wait_for(_watch(_poller(emu), job.id), timeout=10)

    try:
        assert asyncio.run(main())[-1] == "completed"
    finally:
        emu.set_faults(FaultConfig())


def test_a_huge_status_answer_reaches_the_watchers_as_too_large(emu: DoitongEmulator) -> None:
    async def main() -> None:
        async with AsyncDoitongClient(api_key=emu.api_key, base_url=emu.base_url) as client:
            job = await client.submit(REQUEST)
        emu.set_faults(FaultConfig(huge_answer_mib=40))
        await asyncio.wait_for(_watch(_poller(emu, max_consecutive_errors=2), job.id), timeout=20)

    try:
        with pytest.raises(DoitongAnswerTooLarge):
            asyncio.run(main())
    finally:
        emu.set_faults(FaultConfig())
