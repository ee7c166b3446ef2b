"""The request log names the form each request came in: the GraphQL field asked for, or ``rest``."""

from __future__ import annotations

import requests

from airflow_provider_doitong.client.contract import JOB_FIELDS

GENERATE_IMAGE = (
    "mutation GenerateImage($input: ImageGenerationInput!) "
    f"{{ generateImage(input: $input) {{ {JOB_FIELDS} }} }}"
)
GENERATE = f"mutation Generate($input: GenerateInput!) {{ generate(input: $input) {{ {JOB_FIELDS} }} }}"


def test_each_request_is_logged_with_its_form(emu, api):
    image = api.gql(
        GENERATE_IMAGE, {"input": {"service": "flux-krea", "prompt": "a kite", "width": 512, "height": 512}}
    )
    assert image.status_code == 200, image.text
    job = image.json()["data"]["generateImage"]
    assert job["status"] == "processing" and job["url"] is None and job["creditCost"] == 10
    generate = api.gql(
        GENERATE,
        {"input": {"type": "IMAGE", "provider": "flux-dev", "input": {"text": "a boat"}}},
        "Generate",
    )
    assert generate.status_code == 200, generate.text
    assert api.submit().status_code == 200
    api.job(job["id"])
    api.gql("query Jobs($a: ID!) { j0: job(id: $a) { id } }", {"a": job["id"]})
    api.gql("{ account { plan credits } }")
    url = api.wait(job["id"])["url"]
    assert requests.get(url, timeout=5).status_code == 200
    api.gql("{ nonsense }")
    api.gql("{ account {")

    forms = [(e["kind"], e["form"]) for e in emu.request_log()]
    assert forms[:6] == [
        ("submit", "generateImage"),
        ("submit", "generate"),
        ("submit", "rest"),
        ("status", "rest"),
        ("status", "job"),
        ("account", "account"),
    ]
    assert ("download", None) in forms
    assert forms[-2:] == [("other", "nonsense"), ("other", None)]  # the field asked for; a syntax error
