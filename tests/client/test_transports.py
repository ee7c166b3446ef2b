"""The three documented submission forms: the exact bodies, and each one as the emulator receives it.

The form a request arrived in is read from the emulator's own request log (the GraphQL field it
asked for, or ``rest``), so "sent as generateImage" is what the server saw.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_doitong.client import ImageRequest, JobStatus, contract, protocol

from .doitong_support import MakeApi, log_of

graphql = pytest.importorskip("graphql")

SCHEMA = graphql.build_schema(contract.SDL)
REQUEST = ImageRequest(
    provider="flux-krea", prompt="A lantern festival over a river", width=512, height=768, quality="high"
)
#: transport -> (path, the form the emulator logs, the auth header sent)
FORMS = {
    "graphql": ("/graphql", "generate", "authorization"),
    "graphql-image": ("/graphql", "generateImage", "authorization"),
    "rest": ("/v1/text_to_image", "rest", "x-api-key"),
}


def _errors_against_the_sdl(body: dict[str, Any]) -> list[str]:
    """Validation and variable-coercion errors of a GraphQL body against the contract's SDL."""
    document = graphql.parse(body["query"])
    errors = [error.message for error in graphql.validate(SCHEMA, document)]
    result = graphql.execute_sync(
        SCHEMA,
        document,
        variable_values=body.get("variables"),
        operation_name=body.get("operationName"),
        root_value={"generateImage": None, "generate": None},
    )
    # Non-null Job! resolved to None is the only error allowed: there is no data behind the schema here.
    errors += [e.message for e in result.errors or [] if "non-nullable field" not in e.message]
    return errors


def test_transports_are_the_three_documented_forms() -> None:
    assert protocol.TRANSPORTS == ("graphql", "graphql-image", "rest")


def test_graphql_image_body_is_the_generate_image_mutation_with_every_job_field() -> None:
    req = protocol.build_submit(REQUEST, transport="graphql-image")
    assert (req.method, req.path, req.auth, req.kind) == ("POST", "/graphql", "graphql", "submit")
    assert not req.safe_to_resend
    assert req.json_body == {
        "query": (
            "mutation GenerateImage($input: ImageGenerationInput!) { generateImage(input: $input) { "
            f"{contract.JOB_FIELDS} }} }}"
        ),
        "variables": {
            "input": {
                "service": "flux-krea",
                "prompt": "A lantern festival over a river",
                "width": 512,
                "height": 768,
                "version": "flux-krea",
                "quality": "high",
            }
        },
        "operationName": "GenerateImage",
    }
    # The vendor example asks only `id url width height`; status and the charge are needed too.
    for job_field in ("id", "status", "url", "creditCost", "error { code message }"):
        assert job_field in req.json_body["query"]
    assert _errors_against_the_sdl(req.json_body) == []


def test_graphql_image_carries_the_webhook_and_matches_the_rest_body() -> None:
    request = ImageRequest(provider="flux-dev", prompt="p", webhook_url="https://example.com/hook")
    image = protocol.build_submit(request, transport="graphql-image").json_body
    rest = protocol.build_submit(request, transport="rest").json_body
    assert image is not None and rest is not None
    assert image["variables"]["input"] == rest
    assert rest["webhookUrl"] == "https://example.com/hook" and rest["version"] == "flux-dev"
    assert _errors_against_the_sdl(image) == []


def test_an_invalid_graphql_image_body_would_be_caught_here() -> None:
    body = protocol.build_submit(REQUEST, transport="graphql-image").json_body
    assert body is not None
    broken = {**body, "variables": {"input": {**body["variables"]["input"], "service": None}}}
    assert _errors_against_the_sdl(broken) != []


def test_account_over_graphql_image_asks_graphql() -> None:
    assert protocol.build_account(transport="graphql-image") == protocol.build_account(transport="graphql")
    assert protocol.build_account(transport="rest").path == contract.REST_ACCOUNT_PATH


@pytest.mark.parametrize("transport", list(FORMS))
def test_each_transport_reaches_the_emulator_in_its_form(emu: Any, make_api: MakeApi, transport: str) -> None:
    path, form, auth_header = FORMS[transport]
    api = make_api(transport=transport)
    job = api.submit(REQUEST)
    assert job.status in (JobStatus.QUEUED, JobStatus.PROCESSING)  # [A] processing on submission
    assert job.credit_cost == REQUEST.estimated_credits == 20
    assert [(e["form"], e["status"]) for e in log_of(emu, "submit")] == [(form, 200)]
    method, seen_path, headers = api.requests_seen[-1]
    assert (method, seen_path) == ("POST", path)
    assert auth_header in {key.lower() for key in headers}

    done = api.wait_for_job(job.id, poll_interval=0.01, deadline=None)
    assert done.status is JobStatus.COMPLETED and done.url
    seen = emu.job(job.id)
    assert seen is not None
    assert (seen["provider"], seen["width"], seen["height"]) == ("flux-krea", 512, 768)
    assert (seen["metadata"]["prompt"], seen["metadata"]["quality"]) == (REQUEST.prompt, "high")
    # Status reads go through the aliased GraphQL query whatever the submission form.
    assert {e["form"] for e in log_of(emu, "status")} == {"job"}
