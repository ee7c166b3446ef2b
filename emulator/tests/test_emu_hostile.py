"""Hostile answers: ids that are not file names, outputs elsewhere, redirects, bad and endless bodies."""

from __future__ import annotations

import io
from urllib.parse import quote

import pytest
import requests
from PIL import Image

from doitong_emulator import FaultConfig
from doitong_emulator.cli import build_parser


def completed_url(api) -> str:
    job = api.wait(api.submit_id(width=256, height=256))
    assert job["status"] == "completed"
    return job["url"]


def test_every_hostile_option_is_off_by_default(emu, api):
    job = api.wait(api.submit_id(width=256, height=256))
    assert len(job["id"]) == 20 and job["id"].isalnum()
    assert job["url"] == f"{emu.base_url}/outputs/{job['id']}.jpg"
    response = requests.get(job["url"], timeout=10)
    assert response.headers["content-type"] == "image/jpeg" and response.content.endswith(b"\xff\xd9")


def test_hostile_job_ids_climb_out_of_folders(emu, api):
    emu.set_faults(FaultConfig(hostile_job_ids=True))
    job_id = api.submit_id(width=256, height=256)
    assert job_id.startswith("../../escape_") and len(job_id) == len("../../escape_") + 12
    job = api.wait(quote(job_id, safe=""))
    assert job["id"] == job_id
    assert job["url"] == f"{emu.base_url}/outputs/{quote(job_id, safe='')}.jpg"
    assert requests.get(job["url"], timeout=10).status_code == 200


def test_outputs_on_another_host_with_an_odd_suffix(emu, api):
    emu.set_faults(FaultConfig(output_base_url="https://evil.example/", output_suffix=".py"))
    job = api.wait(api.submit_id(width=256, height=256))
    assert job["url"] == f"https://evil.example/outputs/{job['id']}.py"
    # The emulator still serves it under any suffix, for clients told to trust that host.
    assert requests.get(f"{emu.base_url}/outputs/{job['id']}.py", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("fmt", "media_type", "pil"), [("png", "image/png", "PNG"), ("webp", "image/webp", "WEBP")]
)
def test_the_served_format_ignores_the_suffix(emu, api, fmt, media_type, pil):
    emu.set_faults(FaultConfig(output_format=fmt))
    response = requests.get(completed_url(api), timeout=10)
    assert response.headers["content-type"] == media_type
    assert Image.open(io.BytesIO(response.content)).format == pil


@pytest.mark.parametrize(
    ("body", "check"),
    [
        ("html", lambda r: r.headers["content-type"].startswith("text/html") and b"<html>" in r.content),
        ("json", lambda r: r.json()["error"] == "output not ready"),
        ("empty", lambda r: r.content == b""),
        (
            "truncated",
            lambda r: r.content.startswith(b"\xff\xd8\xff") and not r.content.endswith(b"\xff\xd9"),
        ),
    ],
)
def test_bad_bodies_come_with_status_200(emu, api, body, check):
    url = completed_url(api)
    emu.set_faults(FaultConfig(download_body=body))
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and check(response)


@pytest.mark.parametrize("body", ["endless", "drip"])
def test_endless_bodies_never_end(emu, api, body):
    url = completed_url(api)
    emu.set_faults(FaultConfig(download_body=body))
    with requests.get(url, stream=True, timeout=10) as response:
        assert response.status_code == 200 and "content-length" not in response.headers
        wanted = 256 * 1024 if body == "endless" else 80
        got = 0
        for chunk in response.iter_content(1024):
            got += len(chunk)
            if got >= wanted:
                break
        assert got >= wanted
    assert emu.stats()["downloads"]["stream_bytes_sent"] >= wanted


def test_only_the_first_downloads_can_be_bad(emu, api):
    url = completed_url(api)
    emu.set_faults(FaultConfig(download_body="html", download_faults=2))
    types = [requests.get(url, timeout=10).headers["content-type"] for _ in range(3)]
    assert [t.split(";")[0] for t in types] == ["text/html", "text/html", "image/jpeg"]


def test_downloads_redirect_first(emu, api):
    url = completed_url(api)
    emu.set_faults(FaultConfig(download_redirects=2))
    first = requests.get(url, allow_redirects=False, timeout=10)
    assert first.status_code == 302 and first.headers["location"].startswith(emu.base_url)
    assert first.headers["location"].endswith("?hop=1")
    followed = requests.get(url, timeout=10)
    assert followed.status_code == 200 and [r.status_code for r in followed.history] == [302, 302]
    emu.set_faults(FaultConfig(download_redirects=1, redirect_base_url="http://elsewhere.test:1"))
    location = requests.get(url, allow_redirects=False, timeout=10).headers["location"]
    assert location.startswith("http://elsewhere.test:1/outputs/")
    assert [e["status"] for e in emu.request_log() if e["kind"] == "download"] == [302, 302, 302, 200, 302]


def test_hostile_options_through_the_admin_endpoint(emu):
    response = requests.post(
        f"{emu.base_url}/_emulator/faults",
        json={
            "hostile_job_ids": "true",
            "download_faults": "2",
            "output_suffix": ".py",
            "redirect_base_url": None,
        },
        timeout=10,
    )
    assert response.status_code == 200
    assert emu.faults == FaultConfig(hostile_job_ids=True, download_faults=2, output_suffix=".py")


@pytest.mark.parametrize(
    "options",
    [
        {"output_format": "gif"},
        {"download_body": "lava"},
        {"download_faults": -1},
        {"download_redirects": 51},
        {"output_base_url": "evil.example"},
        {"output_suffix": "/x"},
    ],
)
def test_hostile_options_are_checked(options):
    with pytest.raises(ValueError, match=next(iter(options))):
        FaultConfig(**options)


def test_cli_hostile_flags_parse():
    args = build_parser().parse_args(
        [
            "--hostile-job-ids",
            "--output-base-url",
            "http://localhost:9",
            "--output-suffix",
            ".py",
            "--output-format",
            "webp",
            "--download-body",
            "endless",
            "--download-faults",
            "3",
            "--download-redirects",
            "2",
            "--redirect-base-url",
            "http://localhost:10",
        ]
    )
    assert args.hostile_job_ids and (args.output_suffix, args.output_format) == (".py", "webp")
    assert (args.download_body, args.download_faults, args.download_redirects) == ("endless", 3, 2)
    assert (args.output_base_url, args.redirect_base_url) == ("http://localhost:9", "http://localhost:10")
