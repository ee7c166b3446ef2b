"""Downloads against a hostile emulator, over both clients: output URLs and their bodies are data.

No request goes to an unlisted host (a second server counts hits), no key goes to a download host,
no body that is not a whole image is returned, and an endless body is read only up to the cap.
"""

from __future__ import annotations

import io
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from airflow_provider_doitong.client import (
    DoitongBadImage,
    DoitongDownloadTimeout,
    DoitongDownloadTooLarge,
    DoitongProtocolError,
    DoitongUntrustedOutput,
    DownloadPolicy,
    ImageRequest,
    Job,
    JobStatus,
)
from airflow_provider_doitong.client.images import check_image
from doitong_emulator import FaultConfig
from tests.recorder import Answer, Recorder

from .doitong_support import FAST, Api, MakeApi, statuses

REQUEST = ImageRequest(provider="flux-krea", prompt="a lighthouse", width=256, height=256)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as rec:
        yield rec


def finished(api: Api) -> Job:
    job = api.wait_for_job(api.submit(REQUEST).id, poll_interval=0.01, deadline=time.time() + 10)
    assert job.status is JobStatus.COMPLETED and job.url
    return job


def downloads_logged(emu: Any, count: int) -> list[int]:
    """The download statuses once ``count`` are logged (a streamed body is logged when it ends)."""
    deadline = time.monotonic() + 30
    while len(statuses(emu, "download")) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return statuses(emu, "download")


def policy(emu: Any, **kwargs: Any) -> DownloadPolicy:
    return DownloadPolicy.for_api(emu.base_url, **kwargs)


def test_an_output_on_an_unlisted_host_is_never_requested(
    emu: Any, make_api: MakeApi, recorder: Recorder
) -> None:
    emu.set_faults(FaultConfig(output_base_url=recorder.base_url))
    api = make_api()
    job = finished(api)
    assert job.url and job.url.startswith(recorder.base_url)
    with pytest.raises(DoitongUntrustedOutput) as info:
        api.download(job.url)
    message = str(info.value)
    assert "'localhost'" in message and "allowed_download_hosts" in message
    assert recorder.seen == [] and statuses(emu, "download") == []


def test_the_connection_extra_widens_the_hosts(emu: Any, make_api: MakeApi) -> None:
    # The output is served by the emulator itself, under the host name "localhost".
    emu.set_faults(FaultConfig(output_base_url=f"http://localhost:{emu.port}"))
    job = finished(make_api())
    api = make_api(download_policy=policy(emu, extra_hosts=("localhost",)))
    assert check_image(api.download(job.url)).extension == "jpg"
    assert statuses(emu, "download") == [200]


def test_a_redirect_to_an_allowed_host_is_followed(emu: Any, make_api: MakeApi) -> None:
    emu.set_faults(FaultConfig(download_redirects=2))
    api = make_api()
    image = api.download(finished(api).url)
    assert check_image(image).extension == "jpg"
    assert statuses(emu, "download") == [302, 302, 200]


def test_a_redirect_to_an_unlisted_host_is_refused(emu: Any, make_api: MakeApi, recorder: Recorder) -> None:
    emu.set_faults(FaultConfig(download_redirects=1, redirect_base_url=recorder.base_url))
    api = make_api()
    with pytest.raises(DoitongUntrustedOutput, match="redirect is on host 'localhost'"):
        api.download(finished(api).url)
    assert recorder.seen == [] and statuses(emu, "download") == [302]


def test_no_key_reaches_a_download_host_even_after_a_redirect(
    emu: Any, make_api: MakeApi, recorder: Recorder
) -> None:
    png = io.BytesIO()
    Image.new("RGB", (16, 16)).save(png, format="PNG")
    recorder.answer_with(Answer(200, png.getvalue(), {"Content-Type": "image/png"}))
    emu.set_faults(FaultConfig(download_redirects=1, redirect_base_url=recorder.base_url))
    api = make_api(download_policy=policy(emu, extra_hosts=("localhost",)))
    assert check_image(api.download(finished(api).url)).extension == "png"
    assert len(recorder.seen) == 1 and recorder.credentials_seen() == set()
    assert statuses(emu, "download") == [302]
    download_headers = {
        k.lower() for _, path, headers in api.requests_seen if "/outputs/" in path for k in headers
    }
    assert not download_headers & {"authorization", "x-api-key"}


def test_too_many_redirects_stop(emu: Any, make_api: MakeApi) -> None:
    emu.set_faults(FaultConfig(download_redirects=50))
    api = make_api()
    with pytest.raises(DoitongProtocolError, match="more than 5 redirects"):
        api.download(finished(api).url)
    # Each attempt followed 5 redirects and read the 6th answer; the retry policy made 4 attempts.
    assert len(statuses(emu, "download")) == 6 * FAST.max_attempts


@pytest.mark.parametrize("body", ["html", "json", "empty", "truncated"])
def test_a_body_that_is_not_an_image_is_retried_then_refused(emu: Any, make_api: MakeApi, body: str) -> None:
    emu.set_faults(FaultConfig(download_body=body))
    api = make_api()
    with pytest.raises(DoitongBadImage):
        api.download(finished(api).url)
    assert statuses(emu, "download") == [200] * FAST.max_attempts


def test_a_bad_body_once_is_fetched_again(emu: Any, make_api: MakeApi) -> None:
    emu.set_faults(FaultConfig(download_body="html", download_faults=2))
    api = make_api()
    assert check_image(api.download(finished(api).url)).extension == "jpg"
    assert statuses(emu, "download") == [200, 200, 200]


@pytest.mark.parametrize(("fmt", "extension"), [("png", "png"), ("webp", "webp"), ("jpeg", "jpg")])
def test_the_type_comes_from_the_bytes_not_the_url(
    emu: Any, make_api: MakeApi, fmt: str, extension: str
) -> None:
    emu.set_faults(FaultConfig(output_suffix=".py", output_format=fmt))
    api = make_api()
    job = finished(api)
    assert job.url and job.url.endswith(".py")
    assert check_image(api.download(job.url)).extension == extension


def test_an_endless_body_is_read_only_up_to_the_cap(emu: Any, make_api: MakeApi) -> None:
    cap = 2 * 1024 * 1024
    emu.set_faults(FaultConfig(download_body="endless"))
    api = make_api(download_policy=policy(emu, max_bytes=cap, time_limit=60))
    url = finished(api).url
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        with pytest.raises(DoitongDownloadTooLarge, match="larger than 2097152 bytes.*max_download_bytes"):
            api.download(url)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    # Memory held stays within a few caps; one attempt only (an over-large body is final). The
    # emulator logs the download once its stream ends, i.e. once it saw the client hang up.
    assert peak < 4 * cap, f"peak {peak} bytes for a {cap}-byte cap"
    assert downloads_logged(emu, 1) == [200]
    print("endless body:", peak, "bytes peak,", emu.stats()["downloads"]["stream_bytes_sent"], "bytes sent")


def test_a_dripping_body_hits_the_time_limit(emu: Any, make_api: MakeApi) -> None:
    emu.set_faults(FaultConfig(download_body="drip"))
    api = make_api(download_policy=policy(emu, time_limit=0.3))
    with pytest.raises(DoitongDownloadTimeout, match="within 0.3s"):
        api.download(finished(api).url)
    assert downloads_logged(emu, FAST.max_attempts) == [200] * FAST.max_attempts


def test_hostile_job_ids_are_data_in_urls(emu: Any, make_api: MakeApi) -> None:
    emu.set_faults(FaultConfig(hostile_job_ids=True))
    api = make_api()
    job = finished(api)
    assert job.id.startswith("../../escape_")
    assert "/outputs/..%2F..%2Fescape_" in (job.url or "")
    assert check_image(api.download(job.url)).extension == "jpg"


# --- API calls follow no redirect ------------------------------------------------------------
@pytest.mark.parametrize("transport", ["graphql", "rest"])
def test_an_api_redirect_is_never_followed(make_api: MakeApi, recorder: Recorder, transport: str) -> None:
    with Recorder() as fake_api:
        fake_api.answer_with(Answer(307, b"", {"Location": f"{recorder.base_url}/v1/text_to_image"}))
        api = make_api(
            base_url=f"http://127.0.0.1:{fake_api.port}", api_key="secret-key-1234567", transport=transport
        )
        with pytest.raises(DoitongProtocolError, match="redirect to host 'localhost'"):
            api.submit(REQUEST)
        assert len(fake_api.seen) == 1  # a submission is never resent
        with pytest.raises(DoitongProtocolError, match="never follow redirects"):
            api.get_account()
        assert len(fake_api.seen) == 1 + FAST.max_attempts  # a read is retried, at the API only
    assert recorder.seen == []
