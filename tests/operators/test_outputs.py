"""Fetching and storing a job's image: ``outputs`` moves the bytes, the outcome table decides the answer.

A fake client stands in for the download (a pure decision path); the folder is real.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_provider_doitong.client import (
    DoitongBadImage,
    DoitongConnectionError,
    DoitongDownloadTimeout,
    DoitongDownloadTooLarge,
    DoitongNotFound,
    DoitongServerError,
    DoitongUnauthorized,
    DoitongUntrustedOutput,
)
from airflow_provider_doitong.operators.outputs import fetch_and_store
from doitong_emulator.images import render_jpeg

LOG = logging.getLogger(__name__)
URL = "https://cdn.doitong.com/outputs/j1.jpg"


class FakeDownloads:
    def __init__(self, outcome: bytes | BaseException) -> None:
        self.outcome = outcome

    def download(self, url: str) -> bytes:
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome


# One row per kind of download failure: the exception the task raises, and how its message starts.
ROWS: list[tuple[str, BaseException, type[AirflowException], str]] = [
    ("unlisted-host", DoitongUntrustedOutput("elsewhere.example"), AirflowFailException, "Not storing"),
    ("too-large", DoitongDownloadTooLarge("over the cap"), AirflowFailException, "Not storing"),
    ("not-an-image", DoitongBadImage("an HTML page"), AirflowException, "Downloading"),
    ("time-limit", DoitongDownloadTimeout("60 s"), AirflowException, "Downloading"),
    ("no-answer", DoitongConnectionError("dropped", request_sent=True), AirflowException, "Downloading"),
    ("cdn-5xx", DoitongServerError("down", status=503), AirflowException, "Downloading"),
    ("cdn-404", DoitongNotFound("gone", status=404), AirflowException, "Downloading"),
    ("cdn-401", DoitongUnauthorized("signed URL refused", status=401), AirflowException, "Downloading"),
]


@pytest.mark.parametrize(
    ("error", "exception", "start"), [pytest.param(e, x, s, id=n) for n, e, x, s in ROWS]
)
def test_a_failed_download_answers_as_the_table_says(
    error: BaseException, exception: type[AirflowException], start: str, tmp_path: Path
) -> None:
    with pytest.raises(AirflowException) as raised:
        fetch_and_store(FakeDownloads(error), job_id="j1", url=URL, location=f"{tmp_path}/", log=LOG)  # type: ignore[arg-type]
    assert type(raised.value) is exception
    assert str(raised.value).startswith(f"{start} ") and "Doitong job j1" in str(raised.value)
    assert not list(tmp_path.iterdir())


def test_a_completed_job_without_a_url_fails_the_try(tmp_path: Path) -> None:
    with pytest.raises(AirflowException) as raised:
        fetch_and_store(FakeDownloads(b""), job_id="j1", url=None, location=f"{tmp_path}/", log=LOG)  # type: ignore[arg-type]
    assert type(raised.value) is AirflowException
    assert "completed without an output URL" in str(raised.value)


def test_an_image_is_written_under_a_safe_name(tmp_path: Path) -> None:
    data = render_jpeg("j1", "a fox", 256, 256)
    where = fetch_and_store(FakeDownloads(data), job_id="../j1", url=URL, location=f"{tmp_path}/", log=LOG)  # type: ignore[arg-type]
    assert where.local and Path(where.shown).parent == tmp_path and Path(where.shown).read_bytes() == data
