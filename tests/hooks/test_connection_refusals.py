"""A connection that would leak is refused, naming the connection: plain http to another host, user
info, a query or fragment in the base URL, a key that cannot be sent as a header."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_doitong.client import DoitongClient
from airflow_provider_doitong.hooks.connection import (
    CONN_FIELDS,
    DoitongConnectionInvalid,
    settings_from_fields,
)

KEY = "dk_live_0123456789abcdef"


def _settings(host: str | None, password: str | None = KEY, **extra: Any) -> Any:
    return settings_from_fields(
        conn_id="doitong_test", host=host, schema=None, port=None, password=password, extra=extra
    )


@pytest.mark.parametrize(
    ("host", "said"),
    [
        pytest.param("http://api.doitong.com", "plain http to 'api.doitong.com'", id="plain-http"),
        pytest.param("http://10.0.0.5:8765", "allow_insecure_http", id="plain-http-private-ip"),
        pytest.param("https://user:s3cr3t@api.doitong.com", "credentials", id="userinfo"),
        pytest.param("https://:s3cr3t@api.doitong.com", "credentials", id="password-only"),
        pytest.param("https://api.doitong.com?token=s3cr3t", "query string", id="query"),
        pytest.param("https://api.doitong.com/?x=1", "query string", id="query-after-slash"),
        pytest.param("https://api.doitong.com#s3cr3t", "fragment", id="fragment"),
        pytest.param("https://api.doitong.com\\@evil.example", "backslash", id="backslash"),
    ],
)
def test_base_urls_that_would_leak_are_refused(host: str, said: str) -> None:
    with pytest.raises(DoitongConnectionInvalid, match=said) as info:
        _settings(host)
    assert "doitong_test" in str(info.value) and "s3cr3t" not in str(info.value)


@pytest.mark.parametrize("flag", [True, "true", "1", "yes"])
def test_plain_http_to_another_host_when_the_extra_allows_it(flag: object) -> None:
    settings = _settings("http://10.0.0.5:8765", allow_insecure_http=flag)
    assert settings.base_url == "http://10.0.0.5:8765"


@pytest.mark.parametrize("host", ["http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765"])
def test_plain_http_to_loopback_is_always_allowed(host: str) -> None:
    assert _settings(host).base_url == host


def test_the_insecure_flag_must_be_a_boolean() -> None:
    with pytest.raises(DoitongConnectionInvalid, match="allow_insecure_http must be true or false"):
        _settings("https://api.doitong.com", allow_insecure_http="maybe")


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("dk_live_\u00e9t\u00e9", id="non-ascii"),
        pytest.param("dk_live_abc\r\nX-Injected: 1", id="crlf"),
        pytest.param("dk_live\x00abc", id="nul"),
        pytest.param("dk\tlive", id="tab"),
    ],
)
def test_a_key_that_cannot_be_a_header_is_refused(key: str) -> None:
    with pytest.raises(DoitongConnectionInvalid, match="cannot be sent in an HTTP header") as info:
        _settings("https://api.doitong.com", password=key)
    assert key.strip() not in str(info.value) and "doitong_test" in str(info.value)
    with pytest.raises(ValueError, match="cannot be sent in an HTTP header"):
        DoitongClient(api_key=key, base_url="https://api.doitong.com")


@pytest.mark.parametrize("key", ["   ", "\n"])
def test_a_key_empty_after_trimming_is_refused(key: str) -> None:
    with pytest.raises(DoitongConnectionInvalid, match="no API key"):
        _settings("https://api.doitong.com", password=key)


def test_a_key_pasted_with_a_line_break_is_trimmed() -> None:
    assert _settings("https://api.doitong.com", password=KEY + "\n").api_key == KEY


def test_the_settings_repr_never_shows_a_secret() -> None:
    settings = _settings("https://api.doitong.com", webhook_secret="whsec_s3cr3t")
    assert KEY not in repr(settings) and "s3cr3t" not in repr(settings)


def test_the_form_declares_the_insecure_http_extra() -> None:
    field = CONN_FIELDS["allow_insecure_http"]
    assert field["schema"]["default"] is False and "http" in field["description"]
