"""Control endpoints under ``/_emulator/``: health, stats, request log, reset and faults."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from doitong_emulator.errors import bad_input
from doitong_emulator.faults import FaultConfig
from doitong_emulator.state import EmulatorState


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator


async def health(request: Request) -> Response:
    """``GET /_emulator/health``."""
    return JSONResponse({"status": "ok"})


async def stats(request: Request) -> Response:
    """``GET /_emulator/stats``: the counters."""
    return JSONResponse(_state(request).snapshot())


async def requests_log(request: Request) -> Response:
    """``GET /_emulator/requests``: ``[{"t", "kind", "status"}, ...]`` for every API request."""
    return JSONResponse(_state(request).request_log())


async def reset(request: Request) -> Response:
    """``POST /_emulator/reset``: forget jobs and counters, restore starting credits."""
    _state(request).reset()
    return JSONResponse({"status": "reset"})


async def faults(request: Request) -> Response:
    """``GET /_emulator/faults`` shows the fault configuration; ``POST`` replaces it."""
    state = _state(request)
    if request.method == "POST":
        try:
            data = json.loads(await request.body() or b"{}")
            if not isinstance(data, dict):
                raise ValueError("the body must be a JSON object")
            config = FaultConfig.from_dict(data)
        except (ValueError, TypeError) as error:
            problem = bad_input(None, f"invalid fault configuration: {error}")
            return JSONResponse(problem.body(), status_code=problem.status)
        state.faults.configure(config)
    return JSONResponse(state.faults.config.to_dict())
