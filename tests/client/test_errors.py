"""The one classifier: every status and code of the contract, and the answers around them."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from airflow_provider_doitong.client.errors import (
    DoitongBadRequest,
    DoitongError,
    DoitongInsufficientCredits,
    DoitongNotFound,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
    DoitongUnauthorized,
    classify,
    first_error,
)


def _body(code: str | None, message: str = "boom", data: Any = ..., **extensions: Any) -> dict[str, Any]:
    ext = dict(extensions)
    if code is not None:
        ext["code"] = code
    body: dict[str, Any] = {"errors": [{"message": message, "extensions": ext}]}
    if data is not ...:
        body["data"] = data
    return body


@pytest.mark.parametrize(
    ("status", "body", "error_type", "code"),
    [
        pytest.param(
            400, _body("BAD_USER_INPUT", field="width"), DoitongBadRequest, "BAD_USER_INPUT", id="400"
        ),
        pytest.param(401, _body("UNAUTHENTICATED"), DoitongUnauthorized, "UNAUTHENTICATED", id="401"),
        pytest.param(401, None, DoitongUnauthorized, None, id="401-no-body"),
        pytest.param(
            402,
            _body("INSUFFICIENT_CREDITS", creditsRequired=100, creditsAvailable=50),
            DoitongInsufficientCredits,
            "INSUFFICIENT_CREDITS",
            id="402",
        ),
        pytest.param(404, _body("NOT_FOUND"), DoitongNotFound, "NOT_FOUND", id="404"),
        pytest.param(429, _body("RATE_LIMITED"), DoitongRateLimited, "RATE_LIMITED", id="429-rate"),
        pytest.param(
            429, _body("CONCURRENCY_LIMIT"), DoitongRateLimited, "CONCURRENCY_LIMIT", id="429-concurrency"
        ),
        pytest.param(429, _body("DAILY_LIMIT"), DoitongRateLimited, "DAILY_LIMIT", id="429-daily"),
        pytest.param(
            500, _body("INTERNAL_SERVER_ERROR"), DoitongServerError, "INTERNAL_SERVER_ERROR", id="500"
        ),
        pytest.param(502, None, DoitongServerError, None, id="502-non-json"),
        pytest.param(503, {"unexpected": True}, DoitongServerError, None, id="503-no-errors"),
        pytest.param(403, _body("FORBIDDEN"), DoitongError, "FORBIDDEN", id="403-unknown"),
        pytest.param(405, _body("BAD_USER_INPUT"), DoitongBadRequest, "BAD_USER_INPUT", id="405-by-code"),
        pytest.param(
            200,
            _body("NOT_FOUND", data={"job": None}),
            DoitongNotFound,
            "NOT_FOUND",
            id="200-errors-null-data",
        ),
        pytest.param(
            200,
            _body("UNAUTHENTICATED", data=None),
            DoitongUnauthorized,
            "UNAUTHENTICATED",
            id="200-errors-data-null",
        ),
        pytest.param(200, _body("WEIRD"), DoitongProtocolError, "WEIRD", id="200-errors-unknown-code"),
    ],
)
def test_classify_errors(status: int, body: Any, error_type: type[DoitongError], code: str | None) -> None:
    error = classify(status=status, body=body, what="submission")
    assert type(error) is error_type
    assert error.status == status
    assert error.code == code
    assert str(error).startswith("Doitong submission: ")
    assert f"HTTP {status}" in str(error)


def test_classify_402_exposes_credits() -> None:
    error = classify(status=402, body=_body("INSUFFICIENT_CREDITS", creditsRequired=100, creditsAvailable=50))
    assert isinstance(error, DoitongInsufficientCredits)
    assert (error.credits_required, error.credits_available) == (100, 50)


def test_classify_429_carries_retry_at() -> None:
    error = classify(status=429, body=_body("RATE_LIMITED"), retry_at=1_900_000_000.5)
    assert isinstance(error, DoitongRateLimited)
    assert error.retry_at == 1_900_000_000.5
    assert not error.is_daily_limit
    daily = classify(status=429, body=_body("DAILY_LIMIT"))
    assert isinstance(daily, DoitongRateLimited) and daily.is_daily_limit and daily.retry_at is None


@pytest.mark.parametrize(
    ("status", "body", "partial_ok"),
    [
        pytest.param(200, {"data": {"generate": {"id": "a"}}}, False, id="plain-success"),
        pytest.param(201, {"data": {"generate": {"id": "a"}}}, False, id="201"),
        pytest.param(200, _body("NOT_FOUND", data={"j0": {"id": "a"}, "j1": None}), False, id="partial-data"),
        pytest.param(200, _body("NOT_FOUND", data={"j0": None, "j1": None}), True, id="all-unknown-aliases"),
        pytest.param(200, None, False, id="non-json-2xx-left-to-caller"),
        pytest.param(200, {"errors": []}, False, id="empty-errors-list"),
    ],
)
def test_classify_successes(status: int, body: Any, partial_ok: bool) -> None:
    assert classify(status=status, body=body, partial_ok=partial_ok) is None


def test_classify_partial_ok_does_not_hide_a_real_failure() -> None:
    """Aliased reads tolerate unknown jobs, not a server failing the whole query at HTTP 200."""
    body = _body("INTERNAL_SERVER_ERROR", data={"j0": None, "j1": None})
    assert isinstance(classify(status=200, body=body, partial_ok=True), DoitongServerError)
    assert isinstance(classify(status=500, body=body, partial_ok=True), DoitongServerError)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"errors": [{"message": "m", "extensions": {"code": "X"}}]}, ("m", {"code": "X"})),
        ({"errors": [{"extensions": "junk"}]}, ("no message", {})),
        ({"errors": ["junk"]}, ("no message", {})),
        ({"errors": "junk"}, None),
        ({"errors": []}, None),
        ([1, 2], None),
        (None, None),
    ],
)
def test_first_error(body: Any, expected: Any) -> None:
    assert first_error(body) == expected


@pytest.mark.parametrize(
    "error",
    [
        classify(status=402, body=_body("INSUFFICIENT_CREDITS", creditsRequired=100, creditsAvailable=50)),
        classify(status=429, body=_body("RATE_LIMITED"), retry_at=123.0),
        classify(status=500, body=None),
    ],
    ids=["402", "429", "500"],
)
def test_errors_survive_pickling(error: DoitongError) -> None:
    """Triggers and task runners pickle exceptions; the fields must come back."""
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.status, copy.code, copy.extensions, str(copy)) == (
        error.status,
        error.code,
        error.extensions,
        str(error),
    )
    if isinstance(error, DoitongRateLimited):
        assert copy.retry_at == error.retry_at
