"""The submission record: what a task keeps of its submission, and what it reads back."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_doitong.client.submission import Record, RecordState


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
