"""The provider's errors, and the one classifier that turns an HTTP answer into one of them.

Two refusals of an untrusted value that is not an API answer stand here too, so that one table
(:mod:`~airflow_provider_doitong.client.outcomes`) can judge them: :class:`UnsafeOutputPath` (a
file name or folder that cannot be written safely) and :class:`InvalidTriggerEvent` (a trigger
event outside the allow-list).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_doitong.client.contract import ErrorCode

if TYPE_CHECKING:
    from airflow_provider_doitong.client.models import Job


class DoitongError(Exception):
    """Base of every error the Doitong client raises.

    :param message: what went wrong, fit for a task log (never holds a secret).
    :param status: the HTTP status, if an answer came.
    :param code: the ``extensions.code`` of the error body, if any.
    :param extensions: the whole ``extensions`` object of the first error.
    :param job: the job the error is about, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        extensions: dict[str, Any] | None = None,
        job: Job | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.extensions = dict(extensions or {})
        self.job = job

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code:
            parts.append(self.code)
        return " | ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, self.__dict__))


def _rebuild(cls: type[DoitongError], message: str, state: dict[str, Any]) -> DoitongError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


class DoitongValidationError(DoitongError, ValueError):
    """A request the contract refuses, caught before anything is sent.

    :param field: the offending field.
    """

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message, code=ErrorCode.BAD_USER_INPUT.value, extensions={"field": field})
        self.field = field


class DoitongBadRequest(DoitongError):
    """400: the API refused the parameters."""


class DoitongUnauthorized(DoitongError):
    """401: missing or invalid API key."""


class DoitongInsufficientCredits(DoitongError):
    """402: the account's balance does not cover the job."""

    @property
    def credits_required(self) -> int | None:
        return self.extensions.get("creditsRequired")

    @property
    def credits_available(self) -> int | None:
        return self.extensions.get("creditsAvailable")


class DoitongNotFound(DoitongError):
    """404: no such job."""


class DoitongRateLimited(DoitongError):
    """429: a rate, concurrency or daily limit.

    :param retry_at: the Unix time at which a retry may succeed, if the answer said.
    :param window_limit: the requests the plan allows per rate-limit window, if the answer said
        (``X-RateLimit-Limit``): a refused client waits at least one request's share of the window.
    :param held: the request was never sent: the window was seen spent on this host
        (:mod:`~airflow_provider_doitong.client.board`).
    """

    held: bool = False

    def __init__(
        self,
        message: str,
        *,
        retry_at: float | None = None,
        window_limit: int | None = None,
        held: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_at = retry_at
        self.window_limit = window_limit
        self.held = held

    @property
    def is_daily_limit(self) -> bool:
        return self.code == ErrorCode.DAILY_LIMIT.value


def was_held(error: BaseException) -> bool:
    """Whether ``error`` is a request held unsent for a window seen spent: no refusal, no failure."""
    return isinstance(error, DoitongRateLimited) and error.held


class DoitongServerError(DoitongError):
    """5xx: the API failed; the contract says to retry."""


class DoitongProtocolError(DoitongError):
    """An answer that does not follow the contract (malformed body, missing fields)."""


class DoitongAnswerTooLarge(DoitongProtocolError):
    """An API answer over :data:`~airflow_provider_doitong.client.contract.MAX_ANSWER_BYTES`; reading stopped.

    A protocol error: a status read is tried again like any answer that breaks the contract, and
    a submission whose answer is this large may have created a job (an ambiguous submission).
    """


class DoitongConnectionError(DoitongError):
    """No answer came.

    :param request_sent: False when the connection was never made (refused, DNS, connect timeout), so
        the request cannot have reached the API; True when it may have.
    """

    def __init__(self, message: str, *, request_sent: bool) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class DoitongJobFailed(DoitongError):
    """The job ended in ``failed``; :attr:`job` carries it and its ``error``."""


class DoitongTimeout(DoitongError):
    """A wait for a job passed its deadline; the job keeps running at Doitong."""


# --- Downloads: an output URL and its body are untrusted input ---------------------------------
class DoitongUntrustedOutput(DoitongError):
    """An output URL (or a redirect on the way to it) that the client refuses to fetch: a host the
    connection does not allow, a scheme other than https (plain http only to loopback), or
    credentials in the URL. Nothing was requested from that place; retrying cannot help.
    """


class DoitongDownloadTooLarge(DoitongError):
    """A download body over the connection's ``max_download_bytes``; reading stopped at the cap.
    Final: the same output would be as large again.
    """


class DoitongBadImage(DoitongProtocolError):
    """A download whose body is not a whole PNG, JPEG or WebP image (an HTML or JSON page, an empty
    or truncated body). A protocol error, so the one retry policy fetches it again a few times.
    """


class DoitongDownloadTimeout(DoitongConnectionError):
    """A download that did not finish within the connection's ``download_timeout`` (the whole
    body, not one read). Retried like any connection error on a download.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, request_sent=True)


_BY_STATUS: dict[int, type[DoitongError]] = {
    400: DoitongBadRequest,
    401: DoitongUnauthorized,
    402: DoitongInsufficientCredits,
    404: DoitongNotFound,
    429: DoitongRateLimited,
}

_BY_CODE: dict[str, type[DoitongError]] = {
    ErrorCode.BAD_USER_INPUT.value: DoitongBadRequest,
    ErrorCode.UNAUTHENTICATED.value: DoitongUnauthorized,
    ErrorCode.INSUFFICIENT_CREDITS.value: DoitongInsufficientCredits,
    ErrorCode.NOT_FOUND.value: DoitongNotFound,
    ErrorCode.RATE_LIMITED.value: DoitongRateLimited,
    ErrorCode.CONCURRENCY_LIMIT.value: DoitongRateLimited,
    ErrorCode.DAILY_LIMIT.value: DoitongRateLimited,
    ErrorCode.INTERNAL_SERVER_ERROR.value: DoitongServerError,
}


def first_error(body: Any) -> tuple[str, dict[str, Any]] | None:
    """The message and extensions of the first entry of a body's ``errors``, if there is one.

    :param body: a decoded JSON body.
    """
    if not isinstance(body, dict):
        return None
    errors = body.get("errors")
    if not isinstance(errors, list) or not errors:
        return None
    err = errors[0] if isinstance(errors[0], dict) else {}
    extensions = err.get("extensions")
    return str(err.get("message") or "no message"), dict(extensions) if isinstance(extensions, dict) else {}


def classify(
    *,
    status: int,
    body: Any,
    retry_at: float | None = None,
    what: str = "request",
    partial_ok: bool = False,
) -> DoitongError | None:
    """Turn an HTTP answer into the error it means, or ``None`` for a success.

    This is the provider's one error classifier: the sync and async clients, the hook and the
    trigger all go through it.

    :param status: the HTTP status.
    :param body: the decoded JSON body (``None`` if it was not JSON).
    :param retry_at: for a 429, when to retry (from :mod:`~airflow_provider_doitong.client.ratelimit`).
    :param what: a few words naming the request, for messages.
    :param partial_ok: a 2xx GraphQL answer whose ``data`` is all null because every field it asked
        for is ``NOT_FOUND`` is not an error as a whole (each aliased field is judged on its own);
        any other error code still fails the answer.
    """
    found = first_error(body)
    if status < 400 and (not found or not _data_is_empty(body) or (partial_ok and _only_not_found(body))):
        return None
    message, extensions = found if found else (f"{what} failed", {})
    code = extensions.get("code")
    cls = _BY_STATUS.get(status) or _BY_CODE.get(str(code))
    if cls is None:
        cls = DoitongServerError if status >= 500 else DoitongProtocolError if status < 400 else DoitongError
    text = f"Doitong {what}: {message}"
    if cls is DoitongRateLimited:
        return DoitongRateLimited(text, retry_at=retry_at, status=status, code=code, extensions=extensions)
    return cls(text, status=status, code=code, extensions=extensions)


def _data_is_empty(body: dict[str, Any]) -> bool:
    data = body.get("data")
    if not isinstance(data, dict):
        return True
    return all(value is None for value in data.values())


def _only_not_found(body: dict[str, Any]) -> bool:
    errors = body.get("errors")
    return isinstance(errors, list) and all(
        isinstance(err, dict)
        and isinstance(err.get("extensions"), dict)
        and err["extensions"].get("code") == ErrorCode.NOT_FOUND.value
        for err in errors
    )


class UnsafeOutputPath(ValueError):
    """A file that would leave its folder, or a folder that cannot be written safely (a symlink where
    a folder must be, a file claimed by another task): the same answer would come again.

    Also importable as ``airflow_provider_doitong.storage.UnsafeOutputPath``, where it is raised."""


class InvalidTriggerEvent(ValueError):
    """An event that no Doitong trigger sends.

    Also importable from :mod:`~airflow_provider_doitong.triggers.events`, where it is raised."""
