"""GraphQL over HTTP: variables, operation names, aliases, batched job reads, partial errors."""

from __future__ import annotations

import requests

from airflow_provider_doitong.client.contract import JOB_FIELDS

GENERATE = """
mutation Generate($input: GenerateInput!) {
  generate(input: $input) { id status type provider url width height metadata creditCost createdAt }
}
query Account { account { plan credits } }
"""


def _generate_input(prompt: str = "a red fox", **options: object) -> dict:
    return {
        "input": {
            "type": "IMAGE",
            "provider": "flux-krea",
            "input": {"text": prompt},
            "options": {"width": 1024, "height": 1024, **options},
        }
    }


def test_generate_with_variables_and_operation_name(api):
    response = api.gql(GENERATE, _generate_input(quality="high"), "Generate")
    assert response.status_code == 200, response.text
    job = response.json()["data"]["generate"]
    assert job["status"] == "processing"
    assert job["url"] is None
    assert job["type"] == "IMAGE"
    assert job["provider"] == "flux-krea"
    assert job["creditCost"] == 20
    assert job["metadata"]["prompt"] == "a red fox"
    assert job["createdAt"].endswith("Z")

    account = api.gql(GENERATE, None, "Account").json()["data"]["account"]
    assert account == {"plan": "pro", "credits": 100_000 - 20}


def test_two_operations_without_a_name_is_a_bad_request(api):
    response = api.gql(GENERATE, _generate_input())
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_unknown_operation_name_is_a_bad_request(api):
    response = api.gql(GENERATE, _generate_input(), "Nope")
    assert response.status_code == 400
    assert "Nope" in response.json()["errors"][0]["message"]


def test_aliases_read_many_jobs_in_one_request_and_count_once(emu, api):
    ids = [api.submit_id(prompt=f"prompt {i}") for i in range(5)]
    fields = " ".join(f'j{i}: job(id: "{job_id}") {{ {JOB_FIELDS} }}' for i, job_id in enumerate(ids))
    before = api.account()
    remaining_before = int(before.headers["X-RateLimit-Remaining"])
    reads_before = emu.stats()["jobs_read"]

    response = api.gql(f'query Batch {{ {fields} missing: job(id: "does-not-exist") {{ id status }} }}')

    assert response.status_code == 200
    body = response.json()
    assert [body["data"][f"j{i}"]["id"] for i in range(5)] == ids
    assert body["data"]["missing"] is None
    assert len(body["errors"]) == 1
    error = body["errors"][0]
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["path"] == ["missing"]
    assert int(response.headers["X-RateLimit-Remaining"]) == remaining_before - 1
    assert emu.stats()["jobs_read"] == reads_before + 6
    assert [r["job"] for r in emu.read_log()[-6:]] == [*ids, "does-not-exist"]


def test_job_query_with_variables(api):
    job_id = api.submit_id()
    query = f"query Job($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"
    job = api.gql(query, {"id": job_id}, "Job").json()["data"]["job"]
    assert job["id"] == job_id
    assert set(job) == {
        "id",
        "status",
        "type",
        "provider",
        "url",
        "width",
        "height",
        "metadata",
        "creditCost",
        "webhookUrl",
        "duration",
        "error",
        "createdAt",
        "completedAt",
    }


def test_unknown_job_alone_gives_null_and_not_found(api):
    response = api.gql('{ job(id: "zzz") { id } }')
    body = response.json()
    assert response.status_code == 200
    assert body["data"] == {"job": None}
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert body["errors"][0]["path"] == ["job"]


def test_generate_image_mutation(api):
    query = "mutation G($input: ImageGenerationInput!) { generateImage(input: $input) { id status url width height } }"
    variables = {"input": {"service": "flux-dev", "prompt": "a cat", "width": 512, "height": 768}}
    job = api.gql(query, variables).json()["data"]["generateImage"]
    assert job["status"] == "processing" and job["url"] is None
    assert (job["width"], job["height"]) == (512, 768)
    assert api.credits() == 100_000 - 50


def test_failed_mutation_answers_with_the_error_status(emu, make_api):
    from doitong_emulator import DoitongEmulator

    with DoitongEmulator(credits=15, time_scale=0.02, job_seconds=5) as poor:
        client = make_api(poor)
        response = client.gql(GENERATE, _generate_input(quality="high"), "Generate")
        assert response.status_code == 402
        body = response.json()
        assert "data" not in body or body["data"] is None
        extensions = body["errors"][0]["extensions"]
        assert extensions == {"code": "INSUFFICIENT_CREDITS", "creditsRequired": 20, "creditsAvailable": 15}


def test_bad_variable_type_names_the_field(api):
    response = api.gql(GENERATE, _generate_input(width="wide"), "Generate")
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": "options.width"}
    assert "options.width" in error["message"]


def test_bad_literal_names_the_field(api):
    query = 'mutation { generateImage(input: {service: "flux-krea", prompt: "p", height: "tall"}) { id } }'
    response = api.gql(query)
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["field"] == "height"


def test_missing_required_input_field_names_it(api):
    query = "mutation G($input: ImageGenerationInput!) { generateImage(input: $input) { id } }"
    response = api.gql(query, {"input": {"service": "flux-krea"}})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"]["field"] == "prompt"
    assert "prompt" in error["message"]


def test_syntax_and_validation_errors_are_bad_requests(api):
    for query in ("query {", "{ job(id: 1) { nonsense } }", "{ __typename @nope }"):
        response = api.gql(query)
        assert response.status_code == 400, query
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_malformed_bodies_are_bad_requests(emu, api):
    url = f"{emu.base_url}/graphql"
    headers = {"Authorization": f"Bearer {emu.api_key}", "Content-Type": "application/json"}
    for raw in (
        b"{not json",
        b"[1, 2]",
        b'"text"',
        b"{}",
        b'{"query": 5}',
        b'{"query": "{ account { plan } }", "variables": [1]}',
        b"",
    ):
        response = requests.post(url, data=raw, headers=headers, timeout=5)
        assert response.status_code == 400, raw
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", raw
    assert api.account().status_code == 200
