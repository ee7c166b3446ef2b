"""The synchronous client: a thin ``requests`` + ``tenacity`` shell over the sans-IO core."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import requests
import urllib3
from tenacity import Retrying

from airflow_provider_doitong.client import protocol
from airflow_provider_doitong.client.base import USER_AGENT, ClientBase
from airflow_provider_doitong.client.downloads import CHUNK_BYTES, WHAT, Download, request_headers
from airflow_provider_doitong.client.errors import DoitongConnectionError, DoitongError, DoitongTimeout
from airflow_provider_doitong.client.models import Account, ImageRequest, Job
from airflow_provider_doitong.client.pacing import RESET_MARGIN, next_read_delay
from airflow_provider_doitong.client.protocol import ApiRequest, ApiResponse
from airflow_provider_doitong.client.retry import RetryPolicy, retry_args
from airflow_provider_doitong.client.untrusted import CappedBody
from airflow_provider_doitong.client.waiting import JobWait

#: urllib3 failures that happen before any byte of the request is sent: refused connections and DNS
#: failures (``NewConnectionError``, ``NameResolutionError``) and connect timeouts all derive from it.
_NEVER_SENT_REASONS = (urllib3.exceptions.ConnectTimeoutError,)


def _never_sent(exc: requests.RequestException) -> bool:
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if not isinstance(exc, requests.ConnectionError):
        return False
    cause: object = exc.args[0] if exc.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, _NEVER_SENT_REASONS)


def _connection_error(exc: requests.RequestException, what: str) -> DoitongConnectionError:
    """Whether a ``requests`` failure can have reached the API; never echoes the request."""
    never_sent = _never_sent(exc)
    reason = "could not connect" if never_sent else "no answer"
    return DoitongConnectionError(
        f"Doitong {what}: {reason} ({type(exc).__name__})", request_sent=not never_sent
    )


def _read_body(resp: requests.Response, steps: Download) -> None:
    """Feed the raw body to ``steps`` a piece at a time (one socket read each, no decoding)."""
    raw = resp.raw
    read1 = getattr(raw, "read1", None)
    try:
        while True:
            chunk = (
                read1(CHUNK_BYTES, decode_content=False)
                if read1
                else raw.read(CHUNK_BYTES, decode_content=False)
            )
            if not chunk or not steps.feed(chunk):
                return
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
        steps.remaining()  # a read that timed out at the time limit is the time limit
        raise DoitongConnectionError(
            f"Doitong {WHAT}: the body was cut off ({type(exc).__name__})", request_sent=True
        ) from None


class DoitongClient(ClientBase):
    """Talks to the Doitong API over one ``requests.Session``.

    See :class:`~airflow_provider_doitong.client.base.ClientBase` for the parameters; ``session``
    may be given to share a connection pool.
    """

    def __init__(self, *, session: requests.Session | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._session = session or requests.Session()

    def close(self) -> None:
        self.close_slots()
        self._session.close()

    def __enter__(self) -> DoitongClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send_once(self, request: ApiRequest) -> ApiResponse:
        self.hold_if_spent(request)
        with self.job_slot(request) as answered:  # a submission: held while the host's slots are all taken
            body = CappedBody(what=request.what)
            try:
                with self._session.request(
                    request.method,
                    self.url_for(request),
                    json=request.json_body,
                    headers=self.headers_for(request),
                    timeout=self.timeout,
                    # A redirect is answered with an error, never followed: the key stays with the API.
                    allow_redirects=False,
                    stream=True,  # read up to the cap, never the whole of an answer of any size
                ) as resp:
                    body.declared(resp.headers.get("Content-Length"), status=resp.status_code)
                    for chunk in resp.iter_content(CHUNK_BYTES):
                        body.feed(chunk, status=resp.status_code)
            except requests.RequestException as exc:
                raise _connection_error(exc, request.what) from None
            return self.answered(
                request, status=resp.status_code, headers=resp.headers, content=body.content(), into=answered
            )

    def send(self, request: ApiRequest, *, retry_policy: RetryPolicy | None = None) -> ApiResponse:
        """Send a request under the retry policy.

        :param request: built by :mod:`~airflow_provider_doitong.client.protocol`.
        :param retry_policy: overrides the client's policy for this call.
        """
        policy = retry_policy or self.retry_policy
        for attempt in Retrying(
            **retry_args(policy, safe_to_resend=request.safe_to_resend, clock=self.clock)
        ):
            with attempt:
                return self._send_once(request)
        raise AssertionError("unreachable")  # pragma: no cover

    def submit(self, request: ImageRequest, *, retry_policy: RetryPolicy | None = None) -> Job:
        """Submit one image; resent only where no job can have been created.

        :param request: the image.
        :param retry_policy: overrides the client's policy for this call.
        """
        try:
            answer = self.send(
                protocol.build_submit(request, transport=self.transport), retry_policy=retry_policy
            )
            job = protocol.parse_job(answer.body)
        except DoitongError as exc:
            self.observe_submit(request, None, exc)
            raise
        self.observe_submit(request, job, None)
        return job

    def get_jobs(
        self, job_ids: Iterable[str], *, retry_policy: RetryPolicy | None = None
    ) -> dict[str, Job | None]:
        """Read many jobs, :data:`~airflow_provider_doitong.client.protocol.MAX_JOBS_PER_QUERY` per aliased GraphQL request.

        :param job_ids: the jobs; an unknown one maps to ``None``.
        :param retry_policy: overrides the client's policy for these reads.
        """
        found: dict[str, Job | None] = {}
        for request in protocol.build_jobs_queries(job_ids):
            found.update(
                protocol.parse_jobs(self.send(request, retry_policy=retry_policy).body, request.job_ids)
            )
        self.saw_jobs(found)
        return found

    def get_job(self, job_id: str, *, retry_policy: RetryPolicy | None = None) -> Job | None:
        """Read one job; ``None`` if the API does not know it.

        :param job_id: the job.
        :param retry_policy: overrides the client's policy for this read.
        """
        return self.get_jobs([job_id], retry_policy=retry_policy)[job_id]

    def get_account(self) -> Account:
        """[A] The account's plan and credit balance."""
        return protocol.parse_account(self.send(protocol.build_account(transport=self.transport)).body)

    def download(self, url: str) -> bytes:
        """Fetch a finished job's image, checked: an allowed host, a capped body, a whole image.

        No API key is sent ([A] output URLs need no auth); redirects are followed one by one, each
        re-checked against the allowed hosts. Bodies that are not images are fetched again under the
        retry policy; a refused host or an over-large body fails at once.

        :param url: the job's ``url``.
        :raises DoitongUntrustedOutput: for a URL or redirect the download policy refuses.
        :raises DoitongDownloadTooLarge: for a body over the policy's byte cap.
        :raises DoitongBadImage: when no attempt brought a whole PNG, JPEG or WebP image.
        """
        for attempt in Retrying(**retry_args(self.retry_policy, safe_to_resend=True, clock=self.clock)):
            with attempt:
                return self._download_once(url)
        raise AssertionError("unreachable")  # pragma: no cover

    def _download_once(self, url: str) -> bytes:
        steps = Download(url, policy=self.download_policy)
        target: str | None = steps.url
        while target is not None:
            read_timeout = min(self.timeout, steps.remaining())
            try:
                resp = self._session.get(
                    target,
                    headers=request_headers(USER_AGENT),
                    allow_redirects=False,
                    stream=True,
                    timeout=(read_timeout, read_timeout),
                )
            except requests.RequestException as exc:
                steps.remaining()
                raise _connection_error(exc, WHAT) from None
            with resp:
                target = steps.answer(resp.status_code, resp.headers)
                if target is None:
                    _read_body(resp, steps)
        return steps.result()

    def wait_for_job(
        self,
        job_id: str,
        *,
        poll_interval: float = 5.0,
        deadline: float | None = None,
        refresh_key: Callable[[], str] | None = None,
    ) -> Job:
        """Poll until the job completes; raise if it fails, vanishes or passes the deadline.

        An unavailable API (5xx, no answer, 429) does not end the wait before the deadline: the
        polls back off and go on (see :func:`~airflow_provider_doitong.client.waiting.after_poll_error`).

        :param poll_interval: the longest gap between polls, stretched only to stay within the plan's
            rate, never under :data:`~airflow_provider_doitong.client.pacing.MIN_POLL_GAP`.
        :param deadline: a Unix time to give up at.
        :param refresh_key: called once when the API refuses the key, for the current one (a
            rotated key); without it a 401 ends the wait.
        """
        return self._wait(job_id, poll_interval=poll_interval, deadline=deadline, refresh_key=refresh_key)

    def _wait(
        self,
        job_id: str,
        *,
        poll_interval: float,
        deadline: float | None,
        refresh_key: Callable[[], str] | None,
        hand_over: bool = False,
    ) -> Job:
        wait = JobWait(
            job_id=job_id,
            poll_interval=poll_interval,
            deadline=deadline,
            clock=self.clock,
            policy=self.retry_policy,
            hand_over=hand_over,
        )
        # a wait that hands over sends each read once: its outages are waited out between reads
        read_policy = dataclasses.replace(self.retry_policy, max_attempts=1) if hand_over else None
        while True:
            try:
                step = wait.observe(
                    self.get_job(job_id, retry_policy=read_policy), rate_limit=self.last_rate_limit
                )
            except DoitongError as exc:
                step = wait.observe_error(exc)
                if step.reauth:
                    if refresh_key is None:
                        raise
                    self.set_api_key(refresh_key())
                    continue
            if step.done:
                return step.result()
            time.sleep(step.sleep)

    def wait_while_young(
        self,
        job_id: str,
        *,
        until: float,
        poll_interval: float = 5.0,
        deadline: float | None = None,
        refresh_key: Callable[[], str] | None = None,
    ) -> Job | None:
        """Wait for a job just submitted until ``until``: the completed job, or ``None`` if it still
        runs then (or the API is unavailable then), for the caller to hand the wait over.

        The first read comes ``poll_interval`` from now (the submission's answer is the first
        status), or when the plan's window allows it (no read at all, if not before ``until``),
        never later than ``until``; the last read is at ``until``. Each read is sent once:
        a 429 or an outage is waited out between reads, never past ``until``. A failed or unknown
        job raises as in :meth:`wait_for_job`, and so does a ``deadline`` passed first.
        """
        end = until if deadline is None else min(until, deadline)
        now = self.clock()
        first = now + next_read_delay(
            now=now, last_read_at=now, poll_interval=poll_interval, rate_limit=self.last_rate_limit
        )
        if first > end + RESET_MARGIN:  # the plan's window allows no read in time: hand over now
            return None
        time.sleep(max(0.0, min(first, end) - now))
        try:
            return self._wait(
                job_id, poll_interval=poll_interval, deadline=end, refresh_key=refresh_key, hand_over=True
            )
        except DoitongTimeout:
            if deadline is not None and deadline <= until:
                raise
            return None
