"""The API endpoints: GraphQL, REST submission, job status, account, and outputs."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from airflow_provider_doitong.client.contract import (
    GRAPHQL_AUTH_HEADER,
    GRAPHQL_AUTH_SCHEME,
    REST_AUTH_HEADER,
    RETRY_AFTER_HEADER,
    ErrorCode,
)
from doitong_emulator import graphql_api
from doitong_emulator.accounts import AccountState
from doitong_emulator.errors import ApiError, bad_input
from doitong_emulator.gate import SCOPE_KEY, RequestInfo
from doitong_emulator.state import EmulatorState
from doitong_emulator.validation import from_image_input

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def state_of(request: Request) -> EmulatorState:
    """The emulator state behind a request."""
    return request.app.state.emulator


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON answer for an error.

    :param headers: headers to add (rate-limit headers); the error's own win.
    """
    return JSONResponse(error.body(), status_code=error.status, headers={**(headers or {}), **error.headers})


def api_endpoint(handler: Endpoint) -> Endpoint:
    """Wrap a handler: errors become JSON answers; rate-limit headers go on every answer."""

    @functools.wraps(handler)
    async def wrapper(request: Request) -> Response:
        try:
            response = await handler(request)
        except ApiError as error:
            response = error_response(error)
        except Exception:
            log.exception("Unexpected error answering %s %s", request.method, request.url.path)
            response = error_response(ApiError(ErrorCode.INTERNAL_SERVER_ERROR, "Internal server error"))
        for key, value in getattr(request.state, "rate_headers", {}).items():
            response.headers.setdefault(key, value)
        return response

    return wrapper


def _info(request: Request) -> RequestInfo:
    info = request.scope.get(SCOPE_KEY)
    if info is None:
        raise ApiError(ErrorCode.INTERNAL_SERVER_ERROR, "The request was not read")
    return info


def _payload(request: Request) -> Any:
    info = _info(request)
    if info.payload_error is not None:
        raise bad_input(None, info.payload_error)
    return info.payload


def _admit(request: Request, api_key: str | None, header: str) -> AccountState:
    state = state_of(request)
    account = state.authenticate(api_key)
    if account is None:
        message = f"Missing API key in the {header} header" if not api_key else "Invalid API key"
        raise ApiError(ErrorCode.UNAUTHENTICATED, message)
    decision = state.admit(account)
    request.state.rate_headers = decision.headers
    if not decision.allowed:
        retry_after = state.retry_after(decision.retry_after)
        raise ApiError(
            ErrorCode.RATE_LIMITED,
            f"Rate limit of {account.window.limit} requests per window exceeded",
            headers={RETRY_AFTER_HEADER: retry_after},
            retryAfter=float(retry_after),
        )
    return account


def _rest_account(request: Request) -> AccountState:
    key = request.headers.get(REST_AUTH_HEADER, "").strip() or None
    return _admit(request, key, REST_AUTH_HEADER)


def _graphql_account(request: Request) -> AccountState:
    scheme, _, token = request.headers.get(GRAPHQL_AUTH_HEADER, "").strip().partition(" ")
    key = token.strip() if scheme.lower() == GRAPHQL_AUTH_SCHEME.lower() else ""
    return _admit(request, key or None, f"{GRAPHQL_AUTH_HEADER}: {GRAPHQL_AUTH_SCHEME}")


@api_endpoint
async def graphql_endpoint(request: Request) -> Response:
    """``POST /graphql``."""
    account = _graphql_account(request)
    answer = graphql_api.run(_payload(request), state=state_of(request), account=account)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@api_endpoint
async def submit_endpoint(request: Request) -> Response:
    """``POST /v1/text_to_image``: answers ``{"data": {"generateimage": job}}``."""
    account = _rest_account(request)
    job_request = from_image_input(_payload(request))
    state = state_of(request)
    job = state.submit(account, job_request)
    return JSONResponse({"data": {"generateimage": state.job_json(job, at_submission=True)}})


@api_endpoint
async def job_endpoint(request: Request) -> Response:
    """``GET /v1/jobs/{job_id}``: answers ``{"data": {"job": job}}`` or 404."""
    account = _rest_account(request)
    state = state_of(request)
    job_id = request.path_params["job_id"]
    job = state.find_job(account, job_id)
    if job is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"Job {job_id!r} not found")
    return JSONResponse({"data": {"job": state.job_json(job)}})


@api_endpoint
async def account_endpoint(request: Request) -> Response:
    """``GET /v1/account``: answers ``{"data": {"account": {"plan", "credits"}}}``."""
    account = _rest_account(request)
    return JSONResponse({"data": {"account": {"plan": account.config.plan, "credits": account.credits}}})
