"""Which transport failures can have reached the API: the same answer from ``requests`` and ``httpx``.

A submission is resent only when the request cannot have been sent, so this split decides whether a
lost connection may create a job twice.
"""

from __future__ import annotations

import httpx
import pytest
import requests
import urllib3.exceptions as u3

from airflow_provider_doitong.client import async_client, sync_client


def _pool_failure(reason: Exception) -> u3.MaxRetryError:
    return u3.MaxRetryError(None, "/graphql", reason=reason)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("exc", "request_sent"),
    [
        pytest.param(
            requests.ConnectionError(_pool_failure(u3.NewConnectionError(None, "Connection refused"))),  # type: ignore[arg-type]
            False,
            id="refused",
        ),
        pytest.param(
            requests.ConnectionError(
                _pool_failure(u3.NameResolutionError("api.doitong.invalid", None, OSError("no name")))  # type: ignore[arg-type]
            ),
            False,
            id="dns-failure",
        ),
        pytest.param(
            requests.ConnectTimeout(_pool_failure(u3.ConnectTimeoutError(None, "timed out"))),
            False,
            id="connect-timeout",
        ),
        pytest.param(
            requests.ConnectionError(
                u3.ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
            ),
            True,
            id="reset-after-send",
        ),
        pytest.param(
            requests.ConnectionError(_pool_failure(u3.ProtocolError("Connection aborted."))),
            True,
            id="aborted",
        ),
        pytest.param(requests.ReadTimeout("read timed out"), True, id="read-timeout"),
        pytest.param(requests.exceptions.ChunkedEncodingError("truncated"), True, id="truncated-body"),
        pytest.param(requests.ConnectionError(), True, id="bare-connection-error"),
    ],
)
def test_requests_failures(exc: requests.RequestException, request_sent: bool) -> None:
    error = sync_client._connection_error(exc, "submission")
    assert error.request_sent is request_sent
    assert str(error).startswith(
        "Doitong submission: " + ("no answer" if request_sent else "could not connect")
    )


@pytest.mark.parametrize(
    ("exc", "request_sent"),
    [
        pytest.param(httpx.ConnectError("refused"), False, id="refused-or-dns"),
        pytest.param(httpx.ConnectTimeout("timed out"), False, id="connect-timeout"),
        pytest.param(httpx.PoolTimeout("pool"), False, id="pool-timeout"),
        pytest.param(httpx.RemoteProtocolError("Server disconnected"), True, id="disconnected"),
        pytest.param(httpx.ReadError("reset"), True, id="read-error"),
        pytest.param(httpx.ReadTimeout("read timed out"), True, id="read-timeout"),
        pytest.param(httpx.WriteError("broken pipe"), True, id="write-error"),
    ],
)
def test_httpx_failures(exc: httpx.TransportError, request_sent: bool) -> None:
    error = async_client._connection_error(exc, "submission")
    assert error.request_sent is request_sent
    assert str(error).startswith(
        "Doitong submission: " + ("no answer" if request_sent else "could not connect")
    )


@pytest.mark.parametrize("transport", ["requests", "httpx"])
def test_a_name_that_does_not_resolve_was_never_sent(transport: str) -> None:
    """Both shells agree on a DNS failure (``.invalid`` never resolves, RFC 2606)."""
    url = "http://api.doitong.invalid/graphql"
    if transport == "requests":
        with pytest.raises(requests.RequestException) as info:
            requests.post(url, timeout=5)
        assert sync_client._connection_error(info.value, "submission").request_sent is False
    else:
        with pytest.raises(httpx.TransportError) as ainfo:
            httpx.post(url, timeout=5)
        assert async_client._connection_error(ainfo.value, "submission").request_sent is False
