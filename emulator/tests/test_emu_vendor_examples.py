"""The vendor pages' own examples, with only the URL and the key changed, work against the emulator."""

from __future__ import annotations

import pytest
import requests

# The curl example of flux-krea-api.txt, its -d body verbatim.
CURL_BODY = """{
    "query": "mutation Generate($input: GenerateInput!) { generate(input: $input) { id status type provider url metadata creditCost } }",
    "variables": {
      "input": {
        "type": "IMAGE",
        "provider": "flux-krea",
        "input": {
          "text": "A futuristic city with flying cars and neon lights"
        },
        "options": {
          "width": 1024,
          "height": 1024
        }
      }
    }
  }"""

# The Python example's query and variables, verbatim.
PYTHON_QUERY = """
mutation Generate($input: GenerateInput!) {
  generate(input: $input) {
    id
    status
    type
    provider
    url
    metadata
    creditCost
  }
}
"""

# The JavaScript example's generateImage query, verbatim.
JS_QUERY = """
      mutation GenerateImage($input: ImageGenerationInput!) {
        generateImage(input: $input) {
          id
          url
          width
          height
        }
      }
    """

# The GraphQL block with its Variables, verbatim.
GRAPHQL_BLOCK = """mutation Generate($input: GenerateInput!) {
  generate(input: $input) {
    id
    status
    type
    provider
    url
    metadata
    creditCost
    createdAt
  }
}"""


def test_curl_example_raw_body(emu):
    response = requests.post(
        f"{emu.base_url}/graphql",
        data=CURL_BODY.encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {emu.api_key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    job = response.json()["data"]["generate"]
    assert set(job) == {"id", "status", "type", "provider", "url", "metadata", "creditCost"}
    assert job["status"] == "processing"
    assert job["type"] == "IMAGE"
    assert job["provider"] == "flux-krea"
    assert job["url"] is None
    assert job["creditCost"] == 10
    assert job["metadata"]["prompt"] == "A futuristic city with flying cars and neon lights"


@pytest.mark.parametrize("provider, cost", [("flux-krea", 10), ("flux-dev", 50)])
def test_python_requests_example(emu, provider, cost):
    url = f"{emu.base_url}/graphql"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {emu.api_key}"}
    variables = {
        "input": {
            "type": "IMAGE",
            "provider": provider,
            "input": {"text": "A futuristic city with flying cars and neon lights"},
            "options": {"width": 1024, "height": 1024},
        }
    }
    response = requests.post(url, json={"query": PYTHON_QUERY, "variables": variables}, headers=headers)
    data = response.json()
    result = data["data"]["generate"]
    assert response.status_code == 200
    assert result["id"] and result["status"] == "processing"
    assert result["provider"] == provider
    assert result["creditCost"] == cost


def test_javascript_generate_image_example(emu):
    body = {
        "query": JS_QUERY,
        "variables": {
            "input": {
                "service": "flux-krea",
                "prompt": "A futuristic city with flying cars and neon lights",
                "width": 1024,
                "height": 1024,
            }
        },
    }
    response = requests.post(
        f"{emu.base_url}/graphql", json=body, headers={"Authorization": f"Bearer {emu.api_key}"}, timeout=10
    )
    image = response.json()["data"]["generateImage"]
    assert set(image) == {"id", "url", "width", "height"}
    assert image["url"] is None and (image["width"], image["height"]) == (1024, 1024)


@pytest.mark.parametrize("provider, cost", [("flux-krea", 20), ("flux-dev", 50)])
def test_graphql_block_with_version_and_high_quality(emu, provider, cost):
    variables = {
        "input": {
            "type": "IMAGE",
            "provider": provider,
            "input": {"text": "A futuristic city with flying cars and neon lights"},
            "options": {"width": 1024, "height": 1024, "version": provider, "quality": "high"},
        }
    }
    response = requests.post(
        f"{emu.base_url}/graphql",
        json={"query": GRAPHQL_BLOCK, "variables": variables},
        headers={"Authorization": f"Bearer {emu.api_key}"},
        timeout=10,
    )
    job = response.json()["data"]["generate"]
    assert job["creditCost"] == cost
    assert job["createdAt"].endswith("Z")
    assert job["metadata"]["quality"] == "high"


def test_rest_parameter_table_and_success_response(emu, receiver):
    response = requests.post(
        f"{emu.base_url}/v1/text_to_image",
        json={
            "service": "flux-krea",
            "prompt": "A futuristic city with flying cars and neon lights",
            "width": 1024,
            "height": 1024,
            "version": "flux-krea",
            "webhookUrl": receiver.url,
        },
        headers={"X-API-Key": emu.api_key},
        timeout=10,
    )
    job = response.json()["data"]["generateimage"]
    for key, value in {"status": "processing", "url": None, "webhookUrl": receiver.url}.items():
        assert job[key] == value
    assert {"id", "createdAt"} <= set(job)
