"""The asynchronous client: a thin ``httpx`` shell over the sans-IO core, for triggers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpx
from tenacity import AsyncRetrying

from airflow_provider_doitong.client import protocol
from airflow_provider_doitong.client.base import USER_AGENT, ClientBase
from airflow_provider_doitong.client.downloads import WHAT, Download, request_headers
from airflow_provider_doitong.client.errors import DoitongConnectionError, DoitongError
from airflow_provider_doitong.client.models import Account, ImageRequest, Job
from airflow_provider_doitong.client.protocol import ApiRequest, ApiResponse
from airflow_provider_doitong.client.retry import RetryPolicy, retry_args
from airflow_provider_doitong.client.untrusted import CappedBody
from airflow_provider_doitong.client.waiting import JobWait


def _connection_error(exc: httpx.TransportError, what: str) -> DoitongConnectionError:
    """Whether an ``httpx`` failure can have reached the API; never echoes the request."""
    never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    reason = "could not connect" if never_sent else "no answer"
    return DoitongConnectionError(
        f"Doitong {what}: {reason} ({type(exc).__name__})", request_sent=not never_sent
    )


class AsyncDoitongClient(ClientBase):
    """Talks to the Doitong API over one ``httpx.AsyncClient``, for the client's whole life.

    See :class:`~airflow_provider_doitong.client.base.ClientBase` for the parameters;
    ``max_connections`` bounds the pool.
    """

    def __init__(self, *, max_connections: int = 20, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._http = httpx.AsyncClient(
            timeout=self.timeout,
            # API answers that redirect are errors; downloads follow redirects one hop at a time.
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def aclose(self) -> None:
        self.close_slots()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncDoitongClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send_once(self, request: ApiRequest) -> ApiResponse:
        self.hold_if_spent(request)
        with self.job_slot(request) as answered:  # a submission: held while the host's slots are all taken
            body = CappedBody(what=request.what)
            try:
                # Streamed: read up to the cap, never the whole of an answer of any size.
                async with self._http.stream(
                    request.method,
                    self.url_for(request),
                    json=request.json_body,
                    headers=self.headers_for(request),
                    follow_redirects=False,
                ) as resp:
                    body.declared(resp.headers.get("Content-Length"), status=resp.status_code)
                    async for chunk in resp.aiter_bytes():
                        body.feed(chunk, status=resp.status_code)
            except httpx.TransportError as exc:
                raise _connection_error(exc, request.what) from None
            return self.answered(
                request, status=resp.status_code, headers=resp.headers, content=body.content(), into=answered
            )

    async def send(self, request: ApiRequest, *, retry_policy: RetryPolicy | None = None) -> ApiResponse:
        """Send a request under the retry policy.

        :param request: built by :mod:`~airflow_provider_doitong.client.protocol`.
        :param retry_policy: overrides the client's policy for this call.
        """
        policy = retry_policy or self.retry_policy
        async for attempt in AsyncRetrying(
            **retry_args(policy, safe_to_resend=request.safe_to_resend, clock=self.clock)
        ):
            with attempt:
                return await self._send_once(request)
        raise AssertionError("unreachable")  # pragma: no cover

    async def submit(self, request: ImageRequest, *, retry_policy: RetryPolicy | None = None) -> Job:
        """Submit one image; resent only where no job can have been created.

        :param request: the image.
        :param retry_policy: overrides the client's policy for this call.
        """
        try:
            answer = await self.send(
                protocol.build_submit(request, transport=self.transport), retry_policy=retry_policy
            )
            job = protocol.parse_job(answer.body)
        except DoitongError as exc:
            self.observe_submit(request, None, exc)
            raise
        self.observe_submit(request, job, None)
        return job

    async def get_jobs(self, job_ids: Iterable[str]) -> dict[str, Job | None]:
        """Read many jobs, :data:`~airflow_provider_doitong.client.protocol.MAX_JOBS_PER_QUERY` per aliased GraphQL request.

        :param job_ids: the jobs; an unknown one maps to ``None``.
        """
        found: dict[str, Job | None] = {}
        for request in protocol.build_jobs_queries(job_ids):
            found.update(protocol.parse_jobs((await self.send(request)).body, request.job_ids))
        self.saw_jobs(found)
        return found

    async def get_job(self, job_id: str) -> Job | None:
        """Read one job; ``None`` if the API does not know it.

        :param job_id: the job.
        """
        return (await self.get_jobs([job_id]))[job_id]

    async def get_account(self) -> Account:
        """[A] The account's plan and credit balance."""
        answer = await self.send(protocol.build_account(transport=self.transport))
        return protocol.parse_account(answer.body)

    async def download(self, url: str) -> bytes:
        """Fetch a finished job's image, checked: an allowed host, a capped body, a whole image.

        No API key is sent ([A] output URLs need no auth); redirects are followed one by one, each
        re-checked against the allowed hosts. Bodies that are not images are fetched again under the
        retry policy; a refused host or an over-large body fails at once.

        :param url: the job's ``url``.
        :raises DoitongUntrustedOutput: for a URL or redirect the download policy refuses.
        :raises DoitongDownloadTooLarge: for a body over the policy's byte cap.
        :raises DoitongBadImage: when no attempt brought a whole PNG, JPEG or WebP image.
        """
        async for attempt in AsyncRetrying(
            **retry_args(self.retry_policy, safe_to_resend=True, clock=self.clock)
        ):
            with attempt:
                steps = Download(url, policy=self.download_policy)
                try:
                    return await asyncio.wait_for(self._fetch(steps), timeout=steps.remaining())
                except asyncio.TimeoutError:
                    raise steps.timed_out() from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch(self, steps: Download) -> bytes:
        target: str | None = steps.url
        while target is not None:
            try:
                async with self._http.stream(
                    "GET", target, headers=request_headers(USER_AGENT), follow_redirects=False
                ) as resp:
                    target = steps.answer(resp.status_code, resp.headers)
                    if target is None:
                        async for chunk in resp.aiter_raw():
                            if not steps.feed(chunk):
                                break
            except httpx.TransportError as exc:
                raise _connection_error(exc, WHAT) from None
        return steps.result()

    async def wait_for_job(
        self,
        job_id: str,
        *,
        poll_interval: float = 5.0,
        deadline: float | None = None,
        refresh_key: Callable[[], Awaitable[str]] | None = None,
    ) -> Job:
        """Poll until the job completes; raise if it fails, vanishes or passes the deadline.

        As :meth:`DoitongClient.wait_for_job <airflow_provider_doitong.client.sync_client.DoitongClient.wait_for_job>`,
        awaitable; ``refresh_key`` is a coroutine function. (The provider's triggers wait through their
        connection's shared :mod:`~airflow_provider_doitong.triggers.poller` instead, one read for
        many jobs; this is the twin of the sync client's wait, for asyncio code of your own.)
        """
        wait = JobWait(
            job_id=job_id,
            poll_interval=poll_interval,
            deadline=deadline,
            clock=self.clock,
            policy=self.retry_policy,
        )
        while True:
            try:
                step = wait.observe(await self.get_job(job_id), rate_limit=self.last_rate_limit)
            except DoitongError as exc:
                step = wait.observe_error(exc)
                if step.reauth:
                    if refresh_key is None:
                        raise
                    self.set_api_key(await refresh_key())
                    continue
            if step.done:
                return step.result()
            await asyncio.sleep(step.sleep)
