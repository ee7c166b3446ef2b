"""The request, job and account models, against the contract's inputs and pricing."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from airflow_provider_doitong.client import contract
from airflow_provider_doitong.client.contract import JobStatus
from airflow_provider_doitong.client.errors import DoitongProtocolError, DoitongValidationError
from airflow_provider_doitong.client.models import Account, ImageRequest, Job


def _request(**overrides: Any) -> ImageRequest:
    values: dict[str, Any] = {"provider": "flux-krea", "prompt": "A futuristic city"}
    values.update(overrides)
    return ImageRequest(**values)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        pytest.param({"prompt": ""}, "prompt", id="empty-prompt"),
        pytest.param({"prompt": "   \n\t "}, "prompt", id="whitespace-prompt"),
        pytest.param({"prompt": "x" * 2001}, "prompt", id="2001-char-prompt"),
        pytest.param({"prompt": "  " + "x" * 2001 + "  "}, "prompt", id="2001-chars-after-trim"),
        pytest.param({"prompt": None}, "prompt", id="none-prompt"),
        pytest.param({"prompt": 42}, "prompt", id="int-prompt"),
        pytest.param({"prompt": "a fox \ud83e"}, "prompt", id="lone-surrogate-half-emoji"),
        pytest.param({"prompt": "\udc00 a fox"}, "prompt", id="lone-low-surrogate"),
        pytest.param({"prompt": "a fox\x00"}, "prompt", id="nul"),
        pytest.param({"prompt": "a \x1b[31mfox"}, "prompt", id="escape"),
        pytest.param({"prompt": "a fox\x7f"}, "prompt", id="del"),
        pytest.param({"prompt": "a\x85fox"}, "prompt", id="c1-next-line"),
        pytest.param({"prompt": "a\x0bfox"}, "prompt", id="vertical-tab"),
        pytest.param({"prompt": "\u200b"}, "prompt", id="zero-width-space"),
        pytest.param({"prompt": "\ufeff\u2060\u200d"}, "prompt", id="bom-word-joiner-zwj"),
        pytest.param({"prompt": "\ufe0f\u0301"}, "prompt", id="variation-selector-combining-mark"),
        pytest.param({"prompt": "\u3000\u00a0\u2028"}, "prompt", id="unicode-spaces"),
        pytest.param({"prompt": "\u3164\u2800"}, "prompt", id="hangul-filler-blank-braille"),
        pytest.param({"width": 13}, "width", id="width-13"),
        pytest.param({"width": 4112}, "width", id="width-4112"),
        pytest.param({"width": 240}, "width", id="width-240-below-min"),
        pytest.param({"width": 1000}, "width", id="width-not-multiple-of-16"),
        pytest.param({"width": "abc"}, "width", id="width-abc"),
        pytest.param({"width": True}, "width", id="width-bool"),
        pytest.param({"width": 1024.5}, "width", id="width-float"),
        pytest.param({"width": "-1024"}, "width", id="width-negative-string"),
        pytest.param({"width": None}, "width", id="width-none"),
        pytest.param({"height": 4112}, "height", id="height-4112"),
        pytest.param({"height": False}, "height", id="height-bool"),
        pytest.param({"provider": "dall-e"}, "provider", id="unknown-provider"),
        pytest.param({"provider": "FLUX-KREA"}, "provider", id="provider-wrong-case"),
        pytest.param({"quality": "ultra"}, "quality", id="quality-ultra"),
        pytest.param({"version": "flux-dev"}, "version", id="version-mismatch"),
        pytest.param({"webhook_url": "ftp://example.com/hook"}, "webhook_url", id="webhook-ftp"),
        pytest.param({"webhook_url": "example.com/hook"}, "webhook_url", id="webhook-no-scheme"),
        pytest.param({"webhook_url": "https://"}, "webhook_url", id="webhook-no-host"),
        pytest.param({"webhook_url": "http:///path"}, "webhook_url", id="webhook-empty-host"),
    ],
)
def test_image_request_refuses(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(DoitongValidationError) as info:
        _request(**overrides)
    assert info.value.field == field
    assert info.value.code == contract.ErrorCode.BAD_USER_INPUT.value
    assert info.value.extensions["field"] == field
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(
            {}, {"width": 1024, "height": 1024, "quality": "standard", "version": "flux-krea"}, id="defaults"
        ),
        pytest.param({"prompt": "  a cat  "}, {"prompt": "a cat"}, id="prompt-trimmed"),
        pytest.param({"prompt": "x" * 2000}, {"prompt": "x" * 2000}, id="2000-chars"),
        pytest.param({"prompt": "x"}, {"prompt": "x"}, id="1-char"),
        pytest.param({"prompt": "a fox\tin\r\nthe snow"}, {"prompt": "a fox\tin\r\nthe snow"}, id="tab-crlf"),
        pytest.param({"prompt": "猫 🦊 é"}, {"prompt": "猫 🦊 é"}, id="non-ascii"),
        pytest.param({"prompt": "\u200ba fox"}, {"prompt": "\u200ba fox"}, id="zero-width-beside-text"),
        pytest.param({"prompt": "❤\ufe0f"}, {"prompt": "❤\ufe0f"}, id="emoji-with-variation-selector"),
        pytest.param({"width": 256, "height": 4096}, {"width": 256, "height": 4096}, id="bounds"),
        pytest.param({"width": "512"}, {"width": 512}, id="width-digit-string"),
        pytest.param({"width": " 768 "}, {"width": 768}, id="width-padded-string"),
        pytest.param({"version": ""}, {"version": "flux-krea"}, id="empty-version-defaults"),
        pytest.param({"version": "flux-krea"}, {"version": "flux-krea"}, id="version-equal"),
        pytest.param({"provider": "flux-dev"}, {"version": "flux-dev"}, id="flux-dev-version"),
        pytest.param(
            {"webhook_url": "https://hooks.example.com/doitong"},
            {"webhook_url": "https://hooks.example.com/doitong"},
            id="webhook-https",
        ),
        pytest.param(
            {"webhook_url": "http://127.0.0.1:9/x"},
            {"webhook_url": "http://127.0.0.1:9/x"},
            id="webhook-http",
        ),
    ],
)
def test_image_request_accepts(overrides: dict[str, Any], expected: dict[str, Any]) -> None:
    request = _request(**overrides)
    for name, value in expected.items():
        assert getattr(request, name) == value
    assert isinstance(request.width, int) and not isinstance(request.width, bool)


def test_image_request_is_frozen() -> None:
    request = _request()
    with pytest.raises(AttributeError):
        request.width = 512  # type: ignore[misc]


@pytest.mark.parametrize(
    ("provider", "width", "height", "quality", "credits"),
    [
        ("flux-krea", 512, 512, "standard", 10),
        ("flux-krea", 1024, 1024, "standard", 10),
        ("flux-krea", 1024, 1024, "high", 20),
        ("flux-krea", 256, 256, "high", 20),
        ("flux-krea", 1024, 1040, "standard", 30),
        ("flux-krea", 2048, 2048, "standard", 30),
        ("flux-krea", 2048, 2048, "high", 50),
        ("flux-krea", 4096, 4096, "high", 50),
        ("flux-krea", 4096, 256, "standard", 10),
        ("flux-dev", 512, 512, "standard", 50),
        ("flux-dev", 1024, 1024, "high", 50),
        ("flux-dev", 4096, 4096, "high", 50),
    ],
)
def test_estimated_credits(provider: str, width: int, height: int, quality: str, credits: int) -> None:
    request = ImageRequest(provider=provider, prompt="p", width=width, height=height, quality=quality)
    assert request.estimated_credits == credits
    assert contract.credit_cost(provider=provider, width=width, height=height, quality=quality) == credits


_JOB_API = {
    "id": "job-1",
    "status": "failed",
    "type": "IMAGE",
    "provider": "flux-krea",
    "url": None,
    "width": 1024,
    "height": 768,
    "metadata": {"duration": 3.5, "width": 1024, "height": 768},
    "creditCost": 10,
    "webhookUrl": None,
    "duration": None,
    "error": {"code": "GENERATION_FAILED", "message": "the model failed"},
    "createdAt": "2026-01-01T00:00:00.000Z",
    "completedAt": "2026-01-01T00:00:04.000Z",
}


def test_job_from_api_and_round_trip() -> None:
    job = Job.from_api(_JOB_API)
    assert job.id == "job-1"
    assert job.status is JobStatus.FAILED and job.is_terminal
    assert (job.width, job.height, job.credit_cost) == (1024, 768, 10)
    assert job.duration == 3.5  # from metadata when the top-level field is null
    assert (job.error_code, job.error_message) == ("GENERATION_FAILED", "the model failed")
    as_dict = job.to_dict()
    assert as_dict["status"] == "failed"
    assert Job.from_dict(as_dict) == job
    assert pickle.loads(pickle.dumps(job)) == job


def test_job_from_documented_webhook_style_answer() -> None:
    """The documented ``generateimage`` answer names the provider ``service`` and has no width."""
    job = Job.from_api(
        {"id": "abc", "status": "processing", "url": None, "service": "flux-dev", "metadata": {"width": 512}}
    )
    assert job.provider == "flux-dev"
    assert job.width == 512
    assert job.status is JobStatus.PROCESSING and not job.is_terminal


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("queued", JobStatus.QUEUED),
        ("processing", JobStatus.PROCESSING),
        ("COMPLETED", JobStatus.COMPLETED),
        ("failed", JobStatus.FAILED),
        ("upscaling", JobStatus.UNKNOWN),
        ("", JobStatus.UNKNOWN),
        (None, JobStatus.UNKNOWN),
    ],
)
def test_job_status_parse(raw: object, status: JobStatus) -> None:
    assert JobStatus.parse(raw) is status
    assert status.is_terminal is (status in (JobStatus.COMPLETED, JobStatus.FAILED))


@pytest.mark.parametrize("data", [None, [], "job", {}, {"id": ""}, {"status": "completed"}])
def test_job_from_api_refuses_non_jobs(data: object) -> None:
    with pytest.raises(DoitongProtocolError):
        Job.from_api(data)


def test_account_from_api() -> None:
    assert Account.from_api({"plan": "pro", "credits": 1234}) == Account(plan="pro", credits=1234)
    with pytest.raises(DoitongProtocolError):
        Account.from_api({"plan": "pro"})
    with pytest.raises(DoitongProtocolError):
        Account.from_api(None)


@pytest.mark.parametrize(
    ("created", "completed", "turnaround"),
    [
        ("2025-01-01T00:00:00Z", "2025-01-01T00:00:21.5Z", 21.5),
        ("2025-01-01T01:00:00+01:00", "2025-01-01T00:00:03Z", 3.0),
        ("2025-01-01T00:00:10Z", "2025-01-01T00:00:00Z", None),  # out of order: not a duration
        (None, "2025-01-01T00:00:00Z", None),
        ("yesterday", "2025-01-01T00:00:00Z", None),
    ],
)
def test_turnaround_is_creation_to_completion_by_the_api_clock(
    created: str | None, completed: str | None, turnaround: float | None
) -> None:
    job = Job(
        id="j", status=JobStatus.COMPLETED, raw_status="completed", created_at=created, completed_at=completed
    )
    assert job.turnaround == turnaround


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        pytest.param(
            "a fox \ud83e",
            "prompt is not valid Unicode text: character 7 is a lone surrogate",
            id="surrogate",
        ),
        pytest.param("a\x1bfox", "prompt holds a control character (U+001B) at character 2", id="control"),
        pytest.param("\u200b\ufeff", "prompt has no visible character", id="invisible"),
    ],
)
def test_prompt_refusals_say_what_is_wrong_without_echoing_the_prompt(prompt: str, message: str) -> None:
    with pytest.raises(DoitongValidationError) as info:
        _request(prompt=prompt)
    assert info.value.message.startswith(message)
    assert prompt not in info.value.message
