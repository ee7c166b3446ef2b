"""Connection fields -> client settings, as a pure function (no Airflow, no network)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_doitong.client.base import normalize_base_url
from airflow_provider_doitong.hooks.connection import (
    ConnectionSettings,
    DoitongConnectionInvalid,
    settings_from_fields,
)

KEY = "dk_live_0123456789abcdef"
SECRET = "whsec_fedcba9876543210"


def _settings(**fields: Any) -> ConnectionSettings:
    values: dict[str, Any] = {
        "conn_id": "doitong_test",
        "host": "http://127.0.0.1:8765",
        "schema": None,
        "port": None,
        "password": KEY,
        "extra": None,
    }
    values.update(fields)
    return settings_from_fields(**values)


@pytest.mark.parametrize(
    ("extra", "plan", "transport", "secret", "timeout"),
    [
        pytest.param(None, "pro", "graphql", None, 30.0, id="no-extra"),
        pytest.param("", "pro", "graphql", None, 30.0, id="empty-extra-string"),
        pytest.param({"plan": "free"}, "free", "graphql", None, 30.0, id="plain"),
        pytest.param({"extra__doitong__plan": "starter"}, "starter", "graphql", None, 30.0, id="prefixed"),
        pytest.param(
            json.dumps({"extra__doitong__transport": "rest", "extra__doitong__webhook_secret": SECRET}),
            "pro",
            "rest",
            SECRET,
            30.0,
            id="prefixed-json-string",
        ),
        pytest.param(
            {"plan": "ENTERPRISE", "transport": "REST", "timeout": "12.5", "webhook_secret": SECRET},
            "enterprise",
            "rest",
            SECRET,
            12.5,
            id="case-and-string-number",
        ),
        pytest.param(
            {"extra__doitong__plan": "", "extra__doitong__timeout": None},
            "pro",
            "graphql",
            None,
            30.0,
            id="empty-form-values-mean-default",
        ),
    ],
)
def test_extras(extra: Any, plan: str, transport: str, secret: str | None, timeout: float) -> None:
    settings = _settings(extra=extra)
    assert (settings.plan, settings.transport, settings.webhook_secret, settings.timeout) == (
        plan,
        transport,
        secret,
        timeout,
    )
    assert settings.api_key == KEY


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"password": None}, "has no API key", id="no-key"),
        pytest.param({"password": "   "}, "has no API key", id="blank-key"),
        pytest.param(
            {"extra": {"plan": "platinum"}},
            "plan must be one of free, starter, pro, enterprise",
            id="bad-plan",
        ),
        pytest.param({"extra": {"extra__doitong__plan": "gold"}}, "got 'gold'", id="bad-prefixed-plan"),
        pytest.param(
            {"extra": {"transport": "grpc"}},
            "transport must be one of graphql, graphql-image, rest",
            id="bad-transport",
        ),
        pytest.param({"extra": {"timeout": "soon"}}, "doitong_test", id="bad-timeout"),
        pytest.param({"extra": {"timeout": -3}}, "timeout must be positive", id="negative-timeout"),
        pytest.param({"extra": {"timeout": 0}}, "timeout must be positive", id="zero-timeout"),
        pytest.param(
            {"extra": {"extra__doitong__timeout": "0"}}, "timeout must be positive", id="zero-timeout-text"
        ),
        pytest.param({"extra": "{not json"}, "extra is not JSON", id="bad-extra-json"),
        pytest.param({"host": "ftp://files.example.com"}, "http(s)://host[:port]", id="bad-scheme"),
    ],
)
def test_invalid_connections(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(DoitongConnectionInvalid) as info:
        _settings(**fields)
    assert message in str(info.value)
    assert "doitong_test" in str(info.value) or "JSON" in str(info.value)
    assert KEY not in str(info.value)


def test_key_from_extra_when_password_empty() -> None:
    assert _settings(password=None, extra={"api_key": KEY}).api_key == KEY


@pytest.mark.parametrize(
    ("host", "schema", "port", "expected"),
    [
        pytest.param(None, None, None, "https://api.doitong.com", id="default"),
        pytest.param("", "http", 80, "https://api.doitong.com", id="empty-host-default"),
        pytest.param("http://127.0.0.1:8765", None, None, "http://127.0.0.1:8765", id="full-url"),
        pytest.param("http://127.0.0.1:8765/", None, None, "http://127.0.0.1:8765", id="trailing-slash"),
        pytest.param("127.0.0.1", "http", 8765, "http://127.0.0.1:8765", id="uri-form-bare-host"),
        pytest.param("http://127.0.0.1", "", 8765, "http://127.0.0.1:8765", id="uri-form-host-with-protocol"),
        pytest.param("http://127.0.0.1:9000", None, 8765, "http://127.0.0.1:9000", id="url-port-wins"),
        pytest.param("api.doitong.com", None, None, "https://api.doitong.com", id="bare-host-https"),
        pytest.param("api.doitong.com", "doitong", None, "https://api.doitong.com", id="odd-schema-https"),
    ],
)
def test_base_url(host: str | None, schema: str | None, port: int | None, expected: str) -> None:
    assert normalize_base_url(host, schema=schema, port=port) == expected
    assert _settings(host=host, schema=schema, port=port).base_url == expected


def test_settings_repr_hides_secrets() -> None:
    settings = _settings(extra={"webhook_secret": SECRET})
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert KEY not in text and SECRET not in text
        assert "doitong_test" in text


@pytest.mark.parametrize(
    ("value", "floor"),
    [(None, None), ("", None), (0, 0), (5000, 5000), ("250", 250), (" 7 ", 7)],
)
def test_the_credit_floor_extra(value: Any, floor: int | None) -> None:
    assert _settings(extra={"credit_floor": value}).credit_floor == floor


@pytest.mark.parametrize("value", [-1, "ten", 1.5, True, "1e3", "9" * 13])
def test_a_credit_floor_that_is_not_a_whole_number_of_credits_is_refused(value: Any) -> None:
    with pytest.raises(DoitongConnectionInvalid, match="credit_floor must be a whole number of credits"):
        _settings(extra={"credit_floor": value})


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (None, None),
        ("", None),
        ("s3://images/cache/", "s3://images/cache/"),
        (" /data/cache ", "/data/cache"),
    ],
)
def test_the_cache_path_extra(value: Any, path: str | None) -> None:
    assert _settings(extra={"cache_path": value}).cache_path == path


@pytest.mark.parametrize("value", [7, ["/a"], "   ", "/data/\ncache", "x" * 3000])
def test_a_cache_path_that_is_not_a_path_is_refused(value: Any) -> None:
    with pytest.raises(DoitongConnectionInvalid, match="cache_path must be a folder's path or URI"):
        _settings(extra={"cache_path": value})
