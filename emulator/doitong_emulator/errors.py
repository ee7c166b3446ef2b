"""API errors and the error body every failing answer carries."""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_doitong.client.contract import HTTP_STATUS_BY_CODE, ErrorCode


class ApiError(Exception):
    """An error the API answers with ``{"errors": [{"message", "extensions": {"code", ...}}]}``.

    :param code: the error code; the HTTP status follows from ``contract.HTTP_STATUS_BY_CODE``.
    :param message: a human-readable message.
    :param status: overrides the HTTP status (e.g. 405 for a wrong method).
    :param headers: extra response headers, such as ``Retry-After``.
    :param extra: more ``extensions`` entries (``field``, ``creditsRequired``, ...).
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else HTTP_STATUS_BY_CODE[code]
        self.headers: dict[str, str] = dict(headers or {})
        self.extra = extra

    @property
    def extensions(self) -> dict[str, Any]:
        """The ``extensions`` object of this error (GraphQL reads this attribute too)."""
        return {"code": self.code.value, **self.extra}

    def body(self) -> dict[str, Any]:
        """The JSON body of an answer carrying only this error."""
        return {"errors": [{"message": self.message, "extensions": self.extensions}]}


def error_body_bytes(code: ErrorCode, message: str, **extra: Any) -> bytes:
    """Encode a one-error body.

    :param extra: more ``extensions`` entries.
    """
    body = {"errors": [{"message": message, "extensions": {"code": code.value, **extra}}]}
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def bad_input(field: str | None, message: str) -> ApiError:
    """A 400 ``BAD_USER_INPUT`` error, naming the offending field in ``extensions.field``.

    :param field: the field's name as the client spelled it, or ``None`` for the whole request.
    :param message: the message; it names the field too.
    """
    if field is None:
        return ApiError(ErrorCode.BAD_USER_INPUT, message)
    return ApiError(ErrorCode.BAD_USER_INPUT, message, field=field)
