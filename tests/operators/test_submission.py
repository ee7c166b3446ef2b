"""The submission record and its fingerprint: what makes two requests the same image."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.client.submission import Record, RecordState, fingerprint

BASE = ImageRequest(provider="flux-krea", prompt="a fox", width=512, height=512, quality="standard")


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a fox in the snow"},
        {"provider": "flux-dev"},
        {"width": 768},
        {"height": 768},
        {"quality": "high"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_part_of_the_image_changes_the_fingerprint(change: dict[str, Any]) -> None:
    fields = {f.name: getattr(BASE, f.name) for f in dataclasses.fields(BASE)}
    fields.update(change, version=None)
    assert fingerprint(ImageRequest(**fields)) != fingerprint(BASE)


def test_what_does_not_make_the_image_leaves_it_alone() -> None:
    same = ImageRequest(
        provider="flux-krea",
        prompt="  a fox ",
        width="512",
        height=512,
        webhook_url="https://hooks.example/x",
    )
    assert fingerprint(same) == fingerprint(BASE)
    assert len(fingerprint(BASE)) == 64 and "fox" not in fingerprint(BASE)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "job-1",
        {"state": "stored", "fingerprint": "f"},  # stored without a job id
        {"state": "submitting", "fingerprint": "f", "job_id": "j"},  # submitting with one
        {"state": "done", "fingerprint": "f", "job_id": "j"},
        {"state": "stored", "fingerprint": 7, "job_id": "j"},
    ],
)
def test_records_this_version_did_not_write_are_not_read(value: Any) -> None:
    assert Record.from_json(value) is None


def test_a_record_round_trips() -> None:
    record = Record(state=RecordState.SUBMITTED, fingerprint="f" * 64, job_id="j", at=1.5)
    assert Record.from_json(record.to_json()) == record
