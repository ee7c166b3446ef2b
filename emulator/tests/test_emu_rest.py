"""REST: submission under lowercase ``generateimage``, job status, account, lifecycle."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from airflow_provider_doitong.client.contract import credit_cost
from doitong_emulator import DoitongEmulator

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


def test_submit_answers_under_lowercase_generateimage(api):
    response = api.submit(
        service="flux-krea",
        prompt="a boat",
        width=512,
        height=512,
        version="flux-krea",
        webhookUrl="https://example.test/cb",
    )
    assert response.status_code == 200
    data = response.json()["data"]
    assert list(data) == ["generateimage"]
    job = data["generateimage"]
    assert job["status"] == "processing"
    assert job["url"] is None
    assert job["webhookUrl"] == "https://example.test/cb"
    assert job["createdAt"].endswith("Z")
    assert job["creditCost"] == 10
    assert job["completedAt"] is None and job["duration"] is None
    datetime.fromisoformat(job["createdAt"].replace("Z", "+00:00"))


def test_defaults_apply(api):
    job = api.submit(service="flux-dev", prompt="p").json()["data"]["generateimage"]
    assert (job["width"], job["height"]) == (1024, 1024)
    assert job["metadata"]["quality"] == "standard"
    assert job["creditCost"] == credit_cost(provider="flux-dev", width=1024, height=1024, quality="standard")


def test_job_status_lifecycle(api):
    job_id = api.submit_id(prompt="lifecycle", width=768, height=512)
    first = api.job(job_id).json()["data"]["job"]
    assert first["status"] == "processing"
    done = api.wait(job_id)
    assert done["status"] == "completed"
    assert done["url"].endswith(f"/outputs/{job_id}.jpg")
    assert done["url"].startswith(api.base_url)
    assert done["completedAt"].endswith("Z")
    assert done["metadata"] == {
        "duration": done["duration"],
        "width": 768,
        "height": 512,
        "prompt": "lifecycle",
        "quality": "standard",
    }
    assert 0.05 <= done["duration"] <= 0.2
    assert done["error"] is None


def test_time_scale_sets_how_long_jobs_take(make_api):
    with DoitongEmulator(time_scale=0.05, job_seconds=6) as emu:
        client = make_api(emu)
        start = time.monotonic()
        job_id = client.submit_id()
        client.wait(job_id)
        elapsed = time.monotonic() - start
        assert 0.28 <= elapsed < 1.0


def test_unknown_job_is_404(api):
    response = api.job("nope")
    assert response.status_code == 404
    assert response.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert "X-RateLimit-Remaining" in response.headers


def test_account(api):
    response = api.account()
    assert response.status_code == 200
    assert response.json() == {"data": {"account": {"plan": "pro", "credits": 100_000}}}


def test_queue_seconds_makes_jobs_queued_first(make_api):
    with DoitongEmulator(time_scale=0.02, job_seconds=10, queue_seconds=10) as emu:
        client = make_api(emu)
        submitted = client.submit().json()["data"]["generateimage"]
        assert submitted["status"] == "queued"
        seen = {submitted["status"]}
        deadline = time.monotonic() + 3
        while "completed" not in seen and time.monotonic() < deadline:
            seen.add(client.job(submitted["id"]).json()["data"]["job"]["status"])
            time.sleep(0.01)
        assert seen == {"queued", "processing", "completed"}


def test_job_seconds_spread_is_seeded_and_bounded(make_api):
    durations = []
    for _ in range(2):
        with DoitongEmulator(time_scale=0.01, job_seconds=10, job_seconds_spread=5, seed=7) as emu:
            client = make_api(emu)
            ids = [client.submit_id(prompt=f"p{i}") for i in range(6)]
            time.sleep(0.2)
            durations.append([client.wait(job_id)["duration"] for job_id in ids])
    assert durations[0] == durations[1]
    assert all(0.05 - 0.002 <= d <= 0.15 + 0.002 for d in durations[0])
    assert len(set(durations[0])) > 1
