"""What the sync and async clients share: configuration, URLs, headers and the judging of answers."""

from __future__ import annotations

import contextlib
import importlib.metadata
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from airflow_provider_doitong.client import contract, observability, protocol
from airflow_provider_doitong.client.board import WindowBoard
from airflow_provider_doitong.client.choices import check_choice
from airflow_provider_doitong.client.downloads import DownloadPolicy
from airflow_provider_doitong.client.errors import DoitongError, DoitongRateLimited, was_held
from airflow_provider_doitong.client.models import ImageRequest, Job
from airflow_provider_doitong.client.pacing import RESET_MARGIN
from airflow_provider_doitong.client.protocol import TRANSPORTS, ApiRequest, ApiResponse, auth_headers
from airflow_provider_doitong.client.ratelimit import RateLimitInfo
from airflow_provider_doitong.client.retry import RetryPolicy
from airflow_provider_doitong.client.safety import UrlRefused, parse_strict_url
from airflow_provider_doitong.client.slots import SlotBoard
from airflow_provider_doitong.client.times import utc_iso


def _installed_version() -> str:
    """The installed distribution's version: the client reads it from the package metadata rather
    than from the package root, which it does not import."""
    try:
        return importlib.metadata.version("airflow-provider-doitong")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


#: The installed provider's version, for the client's own use (the ``User-Agent``, traces).
VERSION = _installed_version()
USER_AGENT = f"airflow-provider-doitong/{VERSION}"


def normalize_base_url(host: str | None, *, schema: str | None = None, port: int | None = None) -> str:
    """The API's base URL from an Airflow connection's host, schema and port.

    ``host`` may be a full URL (``http://127.0.0.1:8765``) or a bare host name, in which case
    ``schema`` (``http``/``https``, default ``https``) and ``port`` complete it. The URL is read
    by the strict grammar downloads are judged by
    (:func:`~airflow_provider_doitong.client.safety.parse_strict_url`): no user name or password
    (it would replace the bearer key, and show in logs), no query string or fragment (it would be
    glued before every request's path), no character an HTTP library could read as another host.

    :param host: the host or base URL; empty for :data:`~airflow_provider_doitong.client.contract.DEFAULT_BASE_URL`.
    :raises ValueError: for anything but ``http(s)://host[:port][/path]``; the message never repeats
        a user name or password.
    """
    if not host:
        return contract.DEFAULT_BASE_URL
    host = host.strip().rstrip("/")
    if "://" not in host:
        scheme = schema if schema in ("http", "https") else "https"
        host = f"{scheme}://{host}" + (f":{port}" if port else "")
    try:
        judged = parse_strict_url(host)
    except UrlRefused as exc:
        raise ValueError(f"the Doitong base URL is not usable: {exc}") from None
    if judged.scheme not in ("http", "https"):
        raise ValueError(f"the Doitong base URL must be http(s)://host[:port], got scheme {judged.scheme!r}")
    if "?" in host or "#" in host:
        raise ValueError(
            "the Doitong base URL must not hold a query string or fragment (it would be put before "
            "every request's path)"
        )
    base = judged.url.rstrip("/")
    if port and judged.port is None and base.count("/") == 2:
        base = f"{base}:{port}"
    return base


def check_api_key(api_key: object) -> str:
    """The API key as it is sent: trimmed, and sendable as an HTTP header value.

    :raises ValueError: for an empty key, or one holding non-ASCII or control characters (a line
        break pasted with it, say); the message never repeats the key.
    """
    if not isinstance(api_key, str) or not api_key.strip():
        raise ValueError("a Doitong API key is required")
    key = api_key.strip()
    if not key.isascii() or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise ValueError(
            "the Doitong API key holds characters that cannot be sent in an HTTP header (non-ASCII "
            "letters, line breaks or other control characters); paste the key again"
        )
    return key


def _job_of(answered: list[ApiResponse]) -> Job | None:
    """The job a submission's answer made, if it was accepted and says so."""
    try:
        return protocol.parse_job(answered[0].body) if answered else None
    except DoitongError:
        return None


class ClientBase:
    """Settings shared by :class:`DoitongClient` and :class:`AsyncDoitongClient`.

    :param api_key: the Doitong API key (kept out of ``repr`` and messages).
    :param transport: submit through ``graphql``, ``graphql-image`` or ``rest``; status reads always
        use GraphQL.
    :param timeout: seconds for each HTTP request.
    :param retry_policy: by default, :class:`RetryPolicy`'s defaults.
    :param clock: the source of the current Unix time (tests pass a fake one).
    :param download_policy: where outputs may be downloaded from, and how much is read; by default
        the API's own host and the vendor's CDN (``contract.DEFAULT_DOWNLOAD_HOSTS``), 64 MiB, 300 s.
    :param observer: told of every answer, submission and refusal (see :mod:`~airflow_provider_doitong.client.observability`);
        by default nobody.
    :param board: where the processes of this host that use the account tell each other that its
        request window is spent (see :mod:`~airflow_provider_doitong.client.board`); by default none.
    :param slots: where they tell each other the account's jobs they know running, so that a
        submission into job slots all taken is held unsent (see
        :mod:`~airflow_provider_doitong.client.slots`); by default none.
    """

    #: What the rate-limit headers of the last answer said.
    last_rate_limit: RateLimitInfo | None

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = contract.DEFAULT_BASE_URL,
        transport: str = "graphql",
        timeout: float = 30.0,
        retry_policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        download_policy: DownloadPolicy | None = None,
        observer: observability.Observer = observability.NO_OBSERVER,
        board: WindowBoard | None = None,
        slots: SlotBoard | None = None,
    ) -> None:
        api_key = check_api_key(api_key)
        check_choice("transport", transport, TRANSPORTS)
        self._api_key = api_key
        self.base_url = normalize_base_url(base_url)
        self.transport = transport
        self.timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy()
        self.clock = clock
        self.download_policy = download_policy or DownloadPolicy.for_api(self.base_url)
        self.last_rate_limit = None
        self.observer = observer
        self.board = board
        self.slots = slots

    def set_api_key(self, api_key: str) -> None:
        """Use another key from now on (a rotated one), and its board."""
        self._api_key = check_api_key(api_key)
        if self.board is not None:
            self.board = WindowBoard.for_account(
                base_url=self.base_url, api_key=self._api_key, directory=self.board.path.parent
            )
        if self.slots is not None:
            self.slots.close(self.clock())  # the old key's account: its jobs count as a departed process's
            self.slots = SlotBoard.for_account(
                base_url=self.base_url,
                api_key=self._api_key,
                concurrency=self.slots.concurrency,
                directory=self.slots.folder,
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, transport={self.transport!r})"

    def url_for(self, request: ApiRequest) -> str:
        return self.base_url + request.path

    def headers_for(self, request: ApiRequest) -> dict[str, str]:
        """JSON, the user agent and the request's auth header (which holds the key: never log it)."""
        return {
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
            **auth_headers(request.auth, self._api_key),
        }

    def observe_answer(self, request: ApiRequest, status: int) -> None:
        """Count a status request and a 429, for every answer (before it is interpreted)."""
        if request.job_ids:
            self.observer.count(observability.STATUS_REQUESTS)
        if status == 429:
            self.observer.count(observability.RATE_LIMITED)

    def observe_submit(self, request: ImageRequest, job: Job | None, error: BaseException | None) -> None:
        """Count a submission made (with its estimated credits) or refused (by kind); one held unsent
        for a spent window is neither."""
        if error is not None and was_held(error):
            return
        if job is not None:
            self.observer.count(observability.JOBS_SUBMITTED, model=request.provider)
            self.observer.count(
                observability.CREDITS_ESTIMATED, request.estimated_credits, model=request.provider
            )
        elif error is not None:
            self.observer.count(
                observability.JOBS_REFUSED, model=request.provider, kind=observability.refusal_kind(error)
            )

    def hold_if_spent(self, request: ApiRequest) -> None:
        """Refuse, unsent, a request into a window seen spent on this host (by any process).

        :raises DoitongRateLimited: ``RATE_LIMITED``, with no HTTP status, resuming at the reset.
        """
        if self.board is None:
            return
        until = self.board.spent_until(self.clock())
        own = self.last_rate_limit
        if until is None or (own is not None and own.reset_at is not None and own.reset_at > until + 0.5):
            return  # nothing told, or this client has already seen the next window
        self.observer.count(observability.REQUESTS_HELD)
        raise DoitongRateLimited(
            f"Doitong {request.what}: the account's request window is spent until {utc_iso(until)} "
            "(seen on this host); not sent",
            retry_at=until + RESET_MARGIN,
            code=contract.ErrorCode.RATE_LIMITED.value,
            held=True,
        )

    @contextlib.contextmanager
    def job_slot(self, request: ApiRequest) -> Iterator[list[ApiResponse]]:
        """Around each attempt to send a submission: hold it unsent while this host's processes know
        the account's job slots all taken; the job of the answer put in the yielded list (when one
        is accepted) counts from then on. Any other request passes.

        :raises DoitongRateLimited: ``CONCURRENCY_LIMIT``, with no HTTP status, resuming when the
            first of the jobs may have ended.
        """
        if self.slots is None or request.kind != "submit":
            yield []
            return
        held = self.slots.claim(self.clock())
        if held is not None:
            until, taken = held
            self.observer.count(observability.REQUESTS_HELD)
            raise DoitongRateLimited(
                f"Doitong {request.what}: the account's {self.slots.concurrency} job slots are taken "
                f"({taken} jobs known running on this host); not sent",
                retry_at=until,
                code=contract.ErrorCode.CONCURRENCY_LIMIT.value,
                held=True,
            )
        answered: list[ApiResponse] = []
        try:
            yield answered
        finally:
            self.slots.settle(_job_of(answered), self.clock())

    def forget_jobs(self, job_ids: Iterable[str]) -> None:
        """Jobs no longer watched by this client (see :meth:`job_slot`): it stops telling of them."""
        if self.slots is not None:
            self.slots.forget(job_ids, self.clock())

    def close_slots(self) -> None:
        """The client closes: the jobs it told of count as those of a process that has ended."""
        if self.slots is not None:
            self.slots.close(self.clock())

    def saw_jobs(self, jobs: Mapping[str, Job | None]) -> None:
        """Jobs read: tell this host's processes which ended (see :meth:`job_slot`)."""
        if self.slots is not None:
            self.slots.saw(jobs, self.clock())

    def answered(
        self,
        request: ApiRequest,
        *,
        status: int,
        headers: Mapping[str, str],
        content: bytes,
        into: list[ApiResponse],
    ) -> ApiResponse:
        """An answer received: counted, judged (:meth:`judge`), and kept ``into`` the list of
        :meth:`job_slot` (a submission's job counts from then on)."""
        self.observe_answer(request, status)
        answer = self.judge(request, status=status, headers=headers, content=content)
        into.append(answer)
        return answer

    def judge(
        self, request: ApiRequest, *, status: int, headers: Mapping[str, str], content: bytes
    ) -> ApiResponse:
        """:func:`protocol.interpret` an answer, and tell the board when it shows the window spent."""
        now = self.clock()
        try:
            answer = protocol.interpret(request, status=status, headers=headers, content=content, now=now)
        except DoitongRateLimited as exc:
            rate_limited = exc.code == contract.ErrorCode.RATE_LIMITED.value
            if self.board is not None and rate_limited and exc.retry_at is not None:
                self.board.post(exc.retry_at, now)
            raise
        self.last_rate_limit = rate = answer.rate_limit
        if self.board is not None and rate.remaining == 0 and rate.reset_at is not None:
            self.board.post(rate.reset_at, now)
        return answer
