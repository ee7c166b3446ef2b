"""The sans-IO protocol: exact request bodies, and reading every shape of answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from requests.structures import CaseInsensitiveDict

from airflow_provider_doitong.client import contract, protocol
from airflow_provider_doitong.client.contract import JobStatus
from airflow_provider_doitong.client.errors import (
    DoitongNotFound,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
    DoitongUnauthorized,
)
from airflow_provider_doitong.client.models import ImageRequest

graphql = pytest.importorskip("graphql")

SCHEMA = graphql.build_schema(contract.SDL)
NOW = 1_800_000_000.0


def _validate(body: dict[str, Any]) -> None:
    """The query is valid against the contract's SDL, and its variables fit it."""
    document = graphql.parse(body["query"])
    assert graphql.validate(SCHEMA, document) == []
    result = graphql.execute_sync(
        SCHEMA,
        document,
        variable_values=body.get("variables"),
        operation_name=body.get("operationName"),
        root_value={"job": lambda *_a, **_k: None, "account": None, "generate": None},
    )
    # Only resolver-level errors (no data behind the schema) may remain, never variable or type errors.
    for error in result.errors or []:
        assert "Variable" not in error.message and "got invalid value" not in error.message, error.message


REQUEST = ImageRequest(
    provider="flux-krea", prompt="A futuristic city", width=1024, height=768, quality="high"
)


def test_graphql_submit_body_is_the_contract_mutation() -> None:
    req = protocol.build_submit(REQUEST, transport="graphql")
    assert (req.method, req.path, req.auth, req.kind) == ("POST", "/graphql", "graphql", "submit")
    assert not req.safe_to_resend
    assert req.json_body == {
        "query": (
            "mutation Generate($input: GenerateInput!) { generate(input: $input) { "
            "id status type provider url width height metadata creditCost webhookUrl duration "
            "error { code message } createdAt completedAt } }"
        ),
        "variables": {
            "input": {
                "type": "IMAGE",
                "provider": "flux-krea",
                "input": {"text": "A futuristic city"},
                "options": {"width": 1024, "height": 768, "version": "flux-krea", "quality": "high"},
            }
        },
        "operationName": "Generate",
    }
    _validate(req.json_body)
    json.dumps(req.json_body)  # JSON-serialisable as is


def test_graphql_submit_with_webhook() -> None:
    request = ImageRequest(provider="flux-dev", prompt="p", webhook_url="https://example.com/h")
    body = protocol.build_submit(request).json_body
    assert body is not None
    assert body["variables"]["input"]["webhookUrl"] == "https://example.com/h"
    assert body["variables"]["input"]["options"]["version"] == "flux-dev"
    _validate(body)


@pytest.mark.parametrize(
    ("webhook", "expected_extra"),
    [(None, {}), ("https://example.com/h", {"webhookUrl": "https://example.com/h"})],
)
def test_rest_submit_body_is_the_documented_parameter_table(
    webhook: str | None, expected_extra: dict[str, str]
) -> None:
    request = ImageRequest(provider="flux-krea", prompt=" cat ", width=512, height=512, webhook_url=webhook)
    req = protocol.build_submit(request, transport="rest")
    assert (req.method, req.path, req.auth, req.kind) == ("POST", "/v1/text_to_image", "rest", "submit")
    assert not req.safe_to_resend
    assert req.json_body == {
        "service": "flux-krea",
        "prompt": "cat",
        "width": 512,
        "height": 512,
        "version": "flux-krea",
        "quality": "standard",
        **expected_extra,
    }


@pytest.mark.parametrize("transport", ["soap", "GRAPHQL", ""])
def test_unknown_transport_refused(transport: str) -> None:
    with pytest.raises(ValueError, match="transport"):
        protocol.build_submit(REQUEST, transport=transport)
    with pytest.raises(ValueError, match="transport"):
        protocol.build_account(transport=transport)


def test_jobs_query_uses_one_alias_per_job() -> None:
    req = protocol.build_jobs_query(["a", "b", "a", "c"])
    assert (req.method, req.path, req.auth, req.kind) == ("POST", "/graphql", "graphql", "status")
    assert req.safe_to_resend
    assert req.job_ids == ("a", "b", "c")
    body = req.json_body
    assert body is not None
    fields = contract.JOB_FIELDS
    assert body == {
        "query": (
            "query Jobs($id0: ID!, $id1: ID!, $id2: ID!) { "
            f"j0: job(id: $id0) {{ {fields} }} j1: job(id: $id1) {{ {fields} }} j2: job(id: $id2) {{ {fields} }} }}"
        ),
        "variables": {"id0": "a", "id1": "b", "id2": "c"},
        "operationName": "Jobs",
    }
    _validate(body)


@pytest.mark.parametrize("count", [0, protocol.MAX_JOBS_PER_QUERY + 1])
def test_jobs_query_bounds(count: int) -> None:
    with pytest.raises(ValueError):
        protocol.build_jobs_query([f"id{n}" for n in range(count)])


def test_jobs_query_at_max() -> None:
    req = protocol.build_jobs_query([f"id{n}" for n in range(protocol.MAX_JOBS_PER_QUERY)])
    assert len(req.job_ids) == protocol.MAX_JOBS_PER_QUERY
    assert req.json_body is not None
    _validate(req.json_body)


def test_rest_account_request() -> None:
    rest = protocol.build_account(transport="rest")
    assert (rest.method, rest.path, rest.auth, rest.json_body) == ("GET", "/v1/account", "rest", None)
    gql = protocol.build_account()
    assert (gql.method, gql.path, gql.auth) == ("POST", "/graphql", "graphql")
    assert gql.json_body == {
        "query": "query Account { account { plan credits } }",
        "operationName": "Account",
    }
    assert gql.safe_to_resend and rest.safe_to_resend
    _validate(gql.json_body)


@pytest.mark.parametrize(
    ("auth", "expected"),
    [("graphql", {"Authorization": "Bearer k-123"}), ("rest", {"X-API-Key": "k-123"})],
)
def test_auth_headers(auth: protocol.Auth, expected: dict[str, str]) -> None:
    assert protocol.auth_headers(auth, "k-123") == expected


@pytest.mark.parametrize("key", ["generateimage", "generate", "generateImage", "job"])
def test_one_object_under_data_reads_any_spelling(key: str) -> None:
    job_json = {"id": "j-1", "status": "processing", "url": None}
    body = {"data": {key: job_json}}
    assert protocol.one_object_under_data(body) is job_json
    job = protocol.parse_job(body)
    assert (job.id, job.status, job.url) == ("j-1", JobStatus.PROCESSING, None)


@pytest.mark.parametrize(
    "body",
    [{}, {"data": None}, {"data": {}}, {"data": {"a": {"id": "1"}, "b": {"id": "2"}}}, {"data": []}],
    ids=["no-data", "null-data", "empty-data", "two-objects", "list-data"],
)
def test_one_object_under_data_refuses(body: dict[str, Any]) -> None:
    with pytest.raises(DoitongProtocolError):
        protocol.one_object_under_data(body)


def test_parse_job_of_the_documented_answer() -> None:
    body = {
        "data": {
            "generateimage": {
                "id": "abc123",
                "status": "processing",
                "url": None,
                "webhookUrl": "https://example.com/h",
                "createdAt": "2024-01-01T00:00:00Z",
            }
        }
    }
    job = protocol.parse_job(body)
    assert (job.id, job.status, job.url, job.created_at) == (
        "abc123",
        JobStatus.PROCESSING,
        None,
        "2024-01-01T00:00:00Z",
    )


def test_parse_jobs_with_aliases_and_nulls() -> None:
    body = {
        "data": {
            "j0": {"id": "a", "status": "completed", "url": "https://cdn.doitong.com/outputs/a.jpg"},
            "j1": None,
            "j2": {"id": "c", "status": "queued", "url": None},
        },
        "errors": [{"message": "job b not found", "path": ["j1"], "extensions": {"code": "NOT_FOUND"}}],
    }
    jobs = protocol.parse_jobs(body, ("a", "b", "c"))
    assert list(jobs) == ["a", "b", "c"]
    assert jobs["a"] is not None and jobs["a"].status is JobStatus.COMPLETED
    assert jobs["a"].url == "https://cdn.doitong.com/outputs/a.jpg"
    assert jobs["b"] is None
    assert jobs["c"] is not None and jobs["c"].status is JobStatus.QUEUED


def test_parse_jobs_missing_alias_is_unknown() -> None:
    assert protocol.parse_jobs({"data": {"j0": {"id": "a", "status": "x"}}}, ("a", "b"))["b"] is None
    with pytest.raises(DoitongProtocolError):
        protocol.parse_jobs({"data": None}, ("a",))


def test_parse_account() -> None:
    account = protocol.parse_account({"data": {"account": {"plan": "starter", "credits": 990}}})
    assert (account.plan, account.credits) == ("starter", 990)


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", None), (b"not json", None), (b"\xff\xfe", None), (b"[1]", [1]), (b'{"a": 1}', {"a": 1})],
)
def test_decode_body(content: bytes, expected: Any) -> None:
    assert protocol.decode_body(content) == expected


def _interpret(req: protocol.ApiRequest, status: int, body: Any, **headers: str) -> protocol.ApiResponse:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return protocol.interpret(
        req, status=status, headers=CaseInsensitiveDict(headers), content=content, now=NOW
    )


def test_interpret_success_keeps_rate_limit() -> None:
    req = protocol.build_account()
    answer = _interpret(
        req,
        200,
        {"data": {"account": {"plan": "pro", "credits": 5}}},
        **{"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59", "X-RateLimit-Reset": str(int(NOW + 60))},
    )
    assert answer.body["data"]["account"]["credits"] == 5
    assert (answer.rate_limit.limit, answer.rate_limit.remaining) == (60, 59)
    assert answer.rate_limit.reset_at == NOW + 60


def test_interpret_429_takes_retry_time_from_headers() -> None:
    body = {"errors": [{"message": "slow down", "extensions": {"code": "RATE_LIMITED"}}]}
    with pytest.raises(DoitongRateLimited) as info:
        _interpret(
            protocol.build_account(),
            429,
            body,
            **{"Retry-After": "2", "X-RateLimit-Reset": str(int(NOW + 50))},
        )
    assert info.value.retry_at == NOW + 2
    with pytest.raises(DoitongRateLimited) as info:
        _interpret(protocol.build_account(), 429, body, **{"X-RateLimit-Reset": str(int(NOW + 50))})
    assert info.value.retry_at == NOW + 50


@pytest.mark.parametrize(
    ("status", "content", "error_type"),
    [
        (200, b"<html>oops</html>", DoitongProtocolError),
        (200, b"[]", DoitongProtocolError),
        (200, b"", DoitongProtocolError),
        (502, b"<html>Bad Gateway</html>", DoitongServerError),
        (
            401,
            b'{"errors": [{"message": "invalid key", "extensions": {"code": "UNAUTHENTICATED"}}]}',
            DoitongUnauthorized,
        ),
    ],
)
def test_interpret_errors(status: int, content: bytes, error_type: type[Exception]) -> None:
    with pytest.raises(error_type) as info:
        _interpret(protocol.build_jobs_query(["a"]), status, content)
    assert info.value.status == status  # type: ignore[attr-defined]
    assert "job status" in str(info.value)


def test_interpret_single_unknown_job_is_none_not_an_error() -> None:
    """[A] An unknown id: GraphQL ``job: null`` with ``NOT_FOUND``; one id or many read alike."""
    body = {"data": {"j0": None}, "errors": [{"message": "no job", "extensions": {"code": "NOT_FOUND"}}]}
    req = protocol.build_jobs_query(["missing"])
    answer = _interpret(req, 200, body)
    assert protocol.parse_jobs(answer.body, req.job_ids) == {"missing": None}


def test_interpret_submission_with_null_data_is_an_error() -> None:
    body = {"data": None, "errors": [{"message": "no such job", "extensions": {"code": "NOT_FOUND"}}]}
    with pytest.raises(DoitongNotFound):
        _interpret(protocol.build_submit(REQUEST), 200, body)
