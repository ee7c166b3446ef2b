"""The emulator's ASGI application."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from airflow_provider_doitong.client.contract import (
    GRAPHQL_PATH,
    REST_ACCOUNT_PATH,
    REST_JOB_PATH,
    REST_SUBMIT_PATH,
    ErrorCode,
)
from doitong_emulator import admin, api, outputs
from doitong_emulator.delivery import WebhookDispatcher
from doitong_emulator.errors import ApiError
from doitong_emulator.gate import ADMIN_PREFIX, OUTPUTS_PREFIX, ApiGate
from doitong_emulator.state import EmulatorState

log = logging.getLogger(__name__)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.BAD_USER_INPUT
    error = ApiError(code, str(exc.detail), status=exc.status_code)
    return JSONResponse(error.body(), status_code=exc.status_code, headers=dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    error = ApiError(ErrorCode.INTERNAL_SERVER_ERROR, "Internal server error")
    return JSONResponse(error.body(), status_code=error.status)


def build_app(state: EmulatorState, *, on_shutdown: Callable[[], None] | None = None) -> ASGIApp:
    """The ASGI app serving one emulator state.

    :param state: the state the endpoints read and change.
    :param on_shutdown: called when the server stops (after deliveries are stopped), e.g. to save state.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        dispatcher = WebhookDispatcher(state=state)
        dispatcher.start()
        try:
            yield
        finally:
            await dispatcher.stop()
            if on_shutdown is not None:
                try:
                    on_shutdown()
                except Exception:
                    log.exception("The emulator's shutdown hook failed")

    routes = [
        Route(GRAPHQL_PATH, api.graphql_endpoint, methods=["POST"]),
        Route(REST_SUBMIT_PATH, api.submit_endpoint, methods=["POST"]),
        Route(REST_JOB_PATH.replace("{job_id}", "{job_id:path}"), api.job_endpoint, methods=["GET"]),
        Route(REST_ACCOUNT_PATH, api.account_endpoint, methods=["GET"]),
        Route(OUTPUTS_PREFIX + "{name:path}", outputs.output_endpoint, methods=["GET"]),
        Route(ADMIN_PREFIX + "health", admin.health, methods=["GET"]),
        Route(ADMIN_PREFIX + "stats", admin.stats, methods=["GET"]),
        Route(ADMIN_PREFIX + "requests", admin.requests_log, methods=["GET"]),
        Route(ADMIN_PREFIX + "reset", admin.reset, methods=["POST"]),
        Route(ADMIN_PREFIX + "faults", admin.faults, methods=["GET", "POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    app.state.emulator = state
    return ApiGate(app, state=state)
