"""The pure checks on answers: image bytes, file stems, download URLs and one download's decisions."""

from __future__ import annotations

import io
import itertools

import pytest
from PIL import Image

from airflow_provider_doitong.client import protocol
from airflow_provider_doitong.client.downloads import Download, DownloadPolicy, request_headers
from airflow_provider_doitong.client.errors import (
    DoitongBadImage,
    DoitongDownloadTimeout,
    DoitongDownloadTooLarge,
    DoitongNotFound,
    DoitongProtocolError,
    DoitongServerError,
    DoitongUntrustedOutput,
)
from airflow_provider_doitong.client.images import JPEG, PNG, WEBP, check_image, sniff_image_type
from airflow_provider_doitong.client.safety import (
    check_download_url,
    host_allowed,
    parse_host_list,
)


def encoded(fmt: str, size: tuple[int, int] = (32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return {"png": encoded("PNG"), "jpg": encoded("JPEG"), "webp": encoded("WEBP")}


# --- image bytes ---------------------------------------------------------------------------
def test_the_type_comes_from_the_bytes(images: dict[str, bytes]) -> None:
    assert [sniff_image_type(images[k]) for k in ("png", "jpg", "webp")] == [PNG, JPEG, WEBP]
    assert [check_image(images[k]).extension for k in ("png", "jpg", "webp")] == ["png", "jpg", "webp"]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"", "an empty body"),
        (b"  <!DOCTYPE html><html><body>Service unavailable</body></html>", "HTML"),
        (b'{"error": "expired"}', "JSON"),
        (b"print('hello')\n", "not a PNG, JPEG or WebP"),
    ],
    ids=["empty", "html", "json", "python"],
)
def test_bodies_that_are_not_images_are_refused(body: bytes, said: str) -> None:
    with pytest.raises(DoitongBadImage, match=said):
        check_image(body)


@pytest.mark.parametrize("kind", ["png", "jpg", "webp"])
def test_truncated_images_are_refused(images: dict[str, bytes], kind: str) -> None:
    with pytest.raises(DoitongBadImage, match="truncated"):
        check_image(images[kind][:-20])


def test_a_webp_whose_riff_length_lies_is_refused(images: dict[str, bytes]) -> None:
    with pytest.raises(DoitongBadImage, match="RIFF header declares"):
        check_image(images["webp"] + b"\x00\x00")


# --- hosts and URLs ------------------------------------------------------------------------
HOSTS = ("api.doitong.com", "*.doitong.com", "127.0.0.1")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("cdn.example.com, *.Example.NET.", ("cdn.example.com", "*.example.net")),
        (["10.0.0.5", "[::1]"], ("10.0.0.5", "::1")),
        ("", ()),
        (None, ()),
    ],
)
def test_host_lists_are_read(value: object, expected: tuple[str, ...]) -> None:
    assert parse_host_list(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", ["https://cdn.example.com", "cdn.example.com/path", "*", "*.com", "a b@c", [1]]
)
def test_bad_host_entries_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="allowed_download_hosts"):
        parse_host_list(value)  # type: ignore[arg-type]


def test_wildcards_match_subdomains_only() -> None:
    assert host_allowed("cdn.doitong.com", HOSTS) and host_allowed("a.b.doitong.com", HOSTS)
    assert not host_allowed("doitong.com.evil.net", HOSTS)
    assert not host_allowed("evildoitong.com", HOSTS)
    assert not host_allowed("doitong.com", ("*.doitong.com",))


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.doitong.com/outputs/a.jpg",
        "https://api.doitong.com:8443/x.png",
        "http://127.0.0.1:9/a.py",
    ],
)
def test_allowed_urls_pass(url: str) -> None:
    assert check_download_url(url, HOSTS) == url


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("https://evil.example/outputs/a.jpg", "host 'evil.example'.*allowed_download_hosts"),
        ("http://cdn.doitong.com/a.jpg", "plain http"),
        ("http://localhost:9/a.jpg", "not an allowed download host"),
        ("file:///etc/passwd", "has no host|scheme"),
        ("ftp://cdn.doitong.com/a.jpg", "scheme 'ftp'"),
        ("https://user:pw@cdn.doitong.com/a.jpg", "credentials"),
        ("https://cdn.doitong.com/a b.jpg", "control characters"),
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254"),
        ("https://[::1", "outside RFC 3986"),
        ("", "not a URL"),
        (None, "not a URL"),
    ],
)
def test_other_urls_are_refused(url: object, said: str) -> None:
    with pytest.raises(DoitongUntrustedOutput, match=said):
        check_download_url(url, HOSTS)


def test_the_refusal_names_the_host_not_the_url() -> None:
    with pytest.raises(DoitongUntrustedOutput) as info:
        check_download_url("https://evil.example/outputs/a.jpg?token=s3cr3t", HOSTS)
    assert "s3cr3t" not in str(info.value) and "evil.example" in str(info.value)


def test_the_default_policy_is_the_api_host_and_the_cdn() -> None:
    policy = DownloadPolicy.for_api("https://api.doitong.com", extra_hosts=("cdn.example.com",))
    assert policy.allowed_hosts == ("api.doitong.com", "*.doitong.com", "cdn.example.com")
    assert policy.max_bytes == 64 * 1024 * 1024


def test_download_requests_carry_no_credentials() -> None:
    headers = {k.lower() for k in request_headers("ua")}
    assert headers == {"user-agent", "accept", "accept-encoding"}


# --- one download's decisions --------------------------------------------------------------
POLICY = DownloadPolicy(allowed_hosts=HOSTS, max_bytes=1000, time_limit=10, max_redirects=2)


def test_redirects_are_followed_only_to_allowed_hosts() -> None:
    steps = Download("https://api.doitong.com/outputs/a.jpg", policy=POLICY)
    assert steps.answer(302, {"Location": "https://cdn.doitong.com/a.jpg"}) == "https://cdn.doitong.com/a.jpg"
    assert steps.answer(307, {"Location": "/b.jpg"}) == "https://cdn.doitong.com/b.jpg"
    with pytest.raises(DoitongProtocolError, match="more than 2 redirects"):
        steps.answer(302, {"Location": "/c.jpg"})
    other = Download("https://api.doitong.com/outputs/a.jpg", policy=POLICY)
    with pytest.raises(DoitongUntrustedOutput, match="redirect is on host 'evil.example'"):
        other.answer(301, {"Location": "https://evil.example/a.jpg"})
    with pytest.raises(DoitongUntrustedOutput, match="plain http"):
        Download("https://api.doitong.com/a", policy=POLICY).answer(
            302, {"Location": "http://cdn.doitong.com/a"}
        )
    with pytest.raises(DoitongProtocolError, match="without a Location"):
        Download("https://api.doitong.com/a", policy=POLICY).answer(302, {})


def test_the_body_is_capped(images: dict[str, bytes]) -> None:
    with pytest.raises(DoitongDownloadTooLarge, match="declares 5000 bytes.*max_download_bytes"):
        Download("https://cdn.doitong.com/a", policy=POLICY).answer(200, {"Content-Length": "5000"})
    steps = Download("https://cdn.doitong.com/a", policy=POLICY)
    assert steps.answer(200, {}) is None
    assert steps.feed(b"x" * 600)
    with pytest.raises(DoitongDownloadTooLarge):
        steps.feed(b"x" * 600)


def test_the_time_limit_covers_the_whole_attempt() -> None:
    ticks = itertools.count(0.0, 4.0)
    steps = Download("https://cdn.doitong.com/a", policy=POLICY, clock=lambda: next(ticks))
    steps.answer(200, {})  # t=4
    assert steps.feed(b"\xff\xd8")  # t=8: each read was quick, but the whole attempt is what counts
    with pytest.raises(DoitongDownloadTimeout, match="within 10s.*download_timeout"):
        steps.feed(b"\xff")  # t=12


def test_compressed_bodies_are_not_unpacked() -> None:
    with pytest.raises(DoitongBadImage, match="gzip"):
        Download("https://cdn.doitong.com/a", policy=POLICY).answer(200, {"Content-Encoding": "gzip"})


@pytest.mark.parametrize(
    ("status", "content", "error_type"),
    [
        (404, b'{"errors": [{"message": "expired", "extensions": {"code": "NOT_FOUND"}}]}', DoitongNotFound),
        (500, b"", DoitongServerError),
        (200, b"", DoitongBadImage),
        (200, b"<html>oops</html>", DoitongBadImage),
    ],
)
def test_the_result_is_an_image_or_the_error(
    status: int, content: bytes, error_type: type[Exception]
) -> None:
    steps = Download("https://cdn.doitong.com/a", policy=POLICY)
    steps.answer(status, {})
    steps.feed(content)
    with pytest.raises(error_type):
        steps.result()


def test_a_whole_image_is_the_result(images: dict[str, bytes]) -> None:
    steps = Download("https://cdn.doitong.com/a", policy=DownloadPolicy(allowed_hosts=HOSTS))
    steps.answer(200, {"Content-Length": str(len(images["png"]))})
    steps.feed(images["png"])
    assert steps.result() == images["png"]


# --- API calls -----------------------------------------------------------------------------
def test_an_api_redirect_is_an_error_naming_the_host() -> None:
    request = protocol.build_account(transport="rest")
    with pytest.raises(DoitongProtocolError, match="redirect to host 'evil.example'") as info:
        protocol.interpret(
            request,
            status=307,
            headers={"Location": "https://evil.example/v1/account?k=1"},
            content=b"",
            now=0,
        )
    assert info.value.status == 307 and "k=1" not in str(info.value)
