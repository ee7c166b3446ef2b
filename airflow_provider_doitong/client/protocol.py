"""Sans-IO protocol: build the API's requests and read its answers, as pure functions.

The sync and async clients only move bytes; every decision about what to send and what an
answer means is made here, once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from airflow_provider_doitong.client import contract
from airflow_provider_doitong.client.choices import check_choice
from airflow_provider_doitong.client.errors import DoitongProtocolError, DoitongRateLimited, classify
from airflow_provider_doitong.client.models import Account, ImageRequest, Job
from airflow_provider_doitong.client.ratelimit import RateLimitInfo
from airflow_provider_doitong.client.untrusted import cap_resume_at

#: How a submission is sent: the ``generate`` mutation, the ``generateImage`` mutation, or the REST
#: endpoint. The three are documented; the connection's ``transport`` extra picks one.
TRANSPORTS: tuple[str, ...] = ("graphql", "graphql-image", "rest")
#: Which auth header a request carries: ``graphql`` (bearer) for anything sent to ``/graphql``.
Auth = Literal["graphql", "rest"]
#: How many jobs one aliased GraphQL status request reads at most.
MAX_JOBS_PER_QUERY = 100

GENERATE_MUTATION = (
    f"mutation Generate($input: GenerateInput!) {{ generate(input: $input) {{ {contract.JOB_FIELDS} }} }}"
)
#: The vendor's example asks only ``id url width height``; the client asks for every job field it reads
#: (a submission's status is ``processing``, its ``creditCost`` the charge).
GENERATE_IMAGE_MUTATION = (
    "mutation GenerateImage($input: ImageGenerationInput!) "
    f"{{ generateImage(input: $input) {{ {contract.JOB_FIELDS} }} }}"
)
ACCOUNT_QUERY = "query Account { account { plan credits } }"


@dataclass(frozen=True, kw_only=True)
class ApiRequest:
    """One request to the API, before any I/O.

    :param path: the path under the base URL.
    :param auth: which auth header to send (``graphql``: bearer; ``rest``: ``X-API-Key``).
    :param kind: ``submit``, ``status`` or ``account``; only a ``submit`` can create a job.
    :param what: a few words naming the request in messages.
    :param job_ids: for status requests, the jobs asked for, in alias order.
    """

    method: str
    path: str
    auth: Auth
    kind: str
    what: str
    json_body: dict[str, Any] | None = None
    job_ids: tuple[str, ...] = field(default=())

    @property
    def safe_to_resend(self) -> bool:
        """Whether sending this again can never create a second job."""
        return self.kind != "submit"


def auth_headers(auth: Auth, api_key: str) -> dict[str, str]:
    """The auth header for a request: a bearer token for GraphQL, ``X-API-Key`` for REST. Never logged."""
    if auth == "rest":
        return {contract.REST_AUTH_HEADER: api_key}
    return {contract.GRAPHQL_AUTH_HEADER: f"{contract.GRAPHQL_AUTH_SCHEME} {api_key}"}


def _image_fields(request: ImageRequest) -> dict[str, Any]:
    """The flat ``ImageGenerationInput`` shared by the REST body and ``generateImage``."""
    fields: dict[str, Any] = {
        "service": request.provider,
        "prompt": request.prompt,
        "width": request.width,
        "height": request.height,
        "version": request.version,
        "quality": request.quality,
    }
    if request.webhook_url:
        fields["webhookUrl"] = request.webhook_url
    return fields


def _generate_input(request: ImageRequest) -> dict[str, Any]:
    """The nested ``GenerateInput`` of the ``generate`` mutation."""
    gql_input: dict[str, Any] = {
        "type": contract.GENERATION_TYPE,
        "provider": request.provider,
        "input": {"text": request.prompt},
        "options": {
            "width": request.width,
            "height": request.height,
            "version": request.version,
            "quality": request.quality,
        },
    }
    if request.webhook_url:
        gql_input["webhookUrl"] = request.webhook_url
    return gql_input


def build_submit(request: ImageRequest, *, transport: str = "graphql") -> ApiRequest:
    """The submission of one image, in the documented form ``transport`` names.

    :param request: a validated :class:`ImageRequest`.
    :param transport: ``graphql`` (the ``generate`` mutation), ``graphql-image`` (the
        ``generateImage`` mutation) or ``rest`` (``POST /v1/text_to_image``). All three create the
        same job; the answer is read the same way (:func:`parse_job`).
    """
    check_choice("transport", transport, TRANSPORTS)
    if transport == "rest":
        return ApiRequest(
            method="POST",
            path=contract.REST_SUBMIT_PATH,
            auth="rest",
            kind="submit",
            what="submission",
            json_body=_image_fields(request),
        )
    if transport == "graphql-image":
        query, variables, operation = GENERATE_IMAGE_MUTATION, _image_fields(request), "GenerateImage"
    else:
        query, variables, operation = GENERATE_MUTATION, _generate_input(request), "Generate"
    return ApiRequest(
        method="POST",
        path=contract.GRAPHQL_PATH,
        auth="graphql",
        kind="submit",
        what="submission",
        json_body={"query": query, "variables": {"input": variables}, "operationName": operation},
    )


def build_jobs_query(job_ids: Iterable[str]) -> ApiRequest:
    """One GraphQL request reading many jobs, one alias each (``j0``, ``j1``, ...).

    :param job_ids: the ids, at most :data:`MAX_JOBS_PER_QUERY`.
    """
    ids = tuple(dict.fromkeys(str(i) for i in job_ids))
    if not ids or len(ids) > MAX_JOBS_PER_QUERY:
        raise ValueError(f"between 1 and {MAX_JOBS_PER_QUERY} job ids per query, got {len(ids)}")
    params = ", ".join(f"$id{n}: ID!" for n in range(len(ids)))
    fields = " ".join(f"j{n}: job(id: $id{n}) {{ {contract.JOB_FIELDS} }}" for n in range(len(ids)))
    return ApiRequest(
        method="POST",
        path=contract.GRAPHQL_PATH,
        auth="graphql",
        kind="status",
        what="job status" if len(ids) == 1 else f"status of {len(ids)} jobs",
        json_body={
            "query": f"query Jobs({params}) {{ {fields} }}",
            "variables": {f"id{n}": job_id for n, job_id in enumerate(ids)},
            "operationName": "Jobs",
        },
        job_ids=ids,
    )


def build_jobs_queries(job_ids: Iterable[str]) -> list[ApiRequest]:
    """The aliased status requests that read every job, :data:`MAX_JOBS_PER_QUERY` at a time.

    :param job_ids: the ids (duplicates are read once).
    """
    ids = list(dict.fromkeys(str(i) for i in job_ids))
    return [build_jobs_query(ids[n : n + MAX_JOBS_PER_QUERY]) for n in range(0, len(ids), MAX_JOBS_PER_QUERY)]


def build_account(*, transport: str = "graphql") -> ApiRequest:
    """[A] The account query: plan and credit balance (both GraphQL transports ask ``/graphql``).

    :param transport: ``graphql``, ``graphql-image`` or ``rest``.
    """
    check_choice("transport", transport, TRANSPORTS)
    if transport == "rest":
        return ApiRequest(
            method="GET", path=contract.REST_ACCOUNT_PATH, auth="rest", kind="account", what="account"
        )
    return ApiRequest(
        method="POST",
        path=contract.GRAPHQL_PATH,
        auth="graphql",
        kind="account",
        what="account",
        json_body={"query": ACCOUNT_QUERY, "operationName": "Account"},
    )


def decode_body(content: bytes) -> Any:
    """The JSON in a body, or ``None`` when it is empty or not JSON."""
    if not content:
        return None
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class ApiResponse:
    """A decoded answer that is not an error, and what its rate-limit headers said."""

    body: dict[str, Any]
    rate_limit: RateLimitInfo


def interpret(
    request: ApiRequest, *, status: int, headers: Mapping[str, str], content: bytes, now: float
) -> ApiResponse:
    """Judge one answer: return it decoded, or raise the error it means.

    :param request: what was sent; its ``kind`` decides whether a partial GraphQL answer is an error.
    :param headers: the answer's headers, a case-insensitive mapping.
    :param now: the current Unix time, to turn a relative rate-limit reset into a Unix time.
    :raises DoitongError: the classified error (a redirect is one: API calls never follow them).
    """
    if 300 <= status < 400:
        raise redirect_refused(request, status=status, location=headers.get("Location"))
    rate_limit = RateLimitInfo.from_headers(headers, now=now)
    body = decode_body(content)
    error = classify(
        status=status,
        body=body,
        retry_at=rate_limit.resume_at,
        what=request.what,
        partial_ok=request.kind == "status",
    )
    if error is not None:
        if isinstance(error, DoitongRateLimited):
            error.retry_at = cap_resume_at(error.retry_at, now=now, daily=error.is_daily_limit)
            error.window_limit = rate_limit.limit
        raise error
    if not isinstance(body, dict):
        raise DoitongProtocolError(f"Doitong {request.what}: the answer is not a JSON object", status=status)
    return ApiResponse(body=body, rate_limit=rate_limit)


def redirect_refused(request: ApiRequest, *, status: int, location: str | None) -> DoitongProtocolError:
    """The error for an API answer that redirects: API calls never follow one (the key would go along).

    The message names where it pointed (its host only: a URL may carry tokens).
    """
    try:
        host = urlsplit(location or "").hostname or ""
    except ValueError:
        host = ""
    where = f" to host {host!r}" if host else ""
    return DoitongProtocolError(
        f"Doitong {request.what}: the API answered with a redirect{where}; API calls never follow "
        "redirects (the API key stays with the API's own host)",
        status=status,
    )


def one_object_under_data(body: dict[str, Any]) -> Any:
    """The one object under ``data``, whatever its key is spelled (``generateimage``, ``generate``...)."""
    data = body.get("data")
    if not isinstance(data, dict) or len(data) != 1:
        raise DoitongProtocolError("expected exactly one object under 'data'")
    return next(iter(data.values()))


def parse_job(body: dict[str, Any]) -> Job:
    """A submission's or a single status request's job."""
    return Job.from_api(one_object_under_data(body))


def parse_jobs(body: dict[str, Any], job_ids: tuple[str, ...]) -> dict[str, Job | None]:
    """The jobs of an aliased status request; ``None`` for an id the API does not know.

    :param job_ids: the ids in alias order (``j0``, ``j1``, ...), as the request asked for them.
    """
    data = body.get("data")
    if not isinstance(data, dict):
        raise DoitongProtocolError("expected 'data' in a job status answer")
    found: dict[str, Job | None] = {}
    for n, job_id in enumerate(job_ids):
        value = data.get(f"j{n}")
        found[job_id] = Job.from_api(value) if value is not None else None
    return found


def parse_account(body: dict[str, Any]) -> Account:
    """The account of an account answer."""
    return Account.from_api(one_object_under_data(body))
