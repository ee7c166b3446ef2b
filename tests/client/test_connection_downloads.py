"""The connection's download extras: allowed hosts, byte cap, time limit, and the hook's clients."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_doitong.client.downloads import DEFAULT_DOWNLOAD_TIMEOUT, DEFAULT_MAX_DOWNLOAD_BYTES
from airflow_provider_doitong.hooks.connection import (
    CONN_FIELDS,
    ConnectionSettings,
    DoitongConnectionInvalid,
    settings_from_fields,
)


def settings(extra: Any, host: str = "https://api.doitong.com") -> ConnectionSettings:
    return settings_from_fields(
        conn_id="doitong_test", host=host, schema=None, port=None, password="key-0123456789", extra=extra
    )


def test_defaults_are_the_api_host_and_the_cdn() -> None:
    policy = settings(None).download_policy()
    assert policy.allowed_hosts == ("api.doitong.com", "*.doitong.com")
    assert (policy.max_bytes, policy.time_limit) == (DEFAULT_MAX_DOWNLOAD_BYTES, DEFAULT_DOWNLOAD_TIMEOUT)


@pytest.mark.parametrize(
    "extra",
    [
        {"allowed_download_hosts": "cdn.example.com, *.example.net"},
        {"allowed_download_hosts": ["cdn.example.com", "*.example.net"]},
        json.dumps({"extra__doitong__allowed_download_hosts": "cdn.example.com *.example.net"}),
    ],
    ids=["comma-string", "list", "ui-prefixed"],
)
def test_the_extra_widens_the_hosts(extra: Any) -> None:
    policy = settings(extra, host="http://127.0.0.1:8765").download_policy()
    assert policy.allowed_hosts == ("127.0.0.1", "*.doitong.com", "cdn.example.com", "*.example.net")


def test_cap_and_time_limit_extras() -> None:
    policy = settings({"max_download_bytes": "1048576", "download_timeout": 12.5}).download_policy()
    assert (policy.max_bytes, policy.time_limit) == (1024 * 1024, 12.5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"allowed_download_hosts": "https://cdn.example.com/"}, "is not a host name"),
        ({"allowed_download_hosts": "*"}, "is not a host name"),
        ({"allowed_download_hosts": {"a": 1}}, "must be a list"),
        ({"max_download_bytes": 0}, "max_download_bytes must be a positive number"),
        ({"max_download_bytes": "lots"}, "max_download_bytes must be a positive number"),
        ({"download_timeout": -1}, "download_timeout must be a positive number"),
    ],
)
def test_bad_download_extras_are_refused(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(DoitongConnectionInvalid, match=message):
        settings(extra)


def test_the_form_shows_the_download_extras() -> None:
    assert {"allowed_download_hosts", "max_download_bytes", "download_timeout"} <= set(CONN_FIELDS)


def test_the_hooks_clients_carry_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_doitong.hooks.doitong import DoitongHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_DOITONG_POLICY",
        json.dumps(
            {
                "conn_type": "doitong",
                "host": "http://127.0.0.1:9",
                "password": "key-0123456789",
                "extra": {"allowed_download_hosts": "cdn.example.com", "max_download_bytes": 4096},
            }
        ),
    )
    with DoitongHook(doitong_conn_id="doitong_policy").get_conn() as client:
        assert client.download_policy.allowed_hosts == ("127.0.0.1", "*.doitong.com", "cdn.example.com")
        assert client.download_policy.max_bytes == 4096
