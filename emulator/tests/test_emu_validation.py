"""Every bad input is a 400 naming the field, and the server keeps serving."""

from __future__ import annotations

import pytest
import requests

BASE = {"service": "flux-krea", "prompt": "a valid prompt"}
CASES = [
    ({"prompt": "p"}, "service"),
    ({"service": "flux-krea"}, "prompt"),
    ({**BASE, "service": "midjourney"}, "service"),
    ({**BASE, "service": 7}, "service"),
    ({**BASE, "prompt": ""}, "prompt"),
    ({**BASE, "prompt": "   \n\t "}, "prompt"),
    ({**BASE, "prompt": "x" * 2001}, "prompt"),
    ({**BASE, "prompt": 12}, "prompt"),
    ({**BASE, "width": 13}, "width"),
    ({**BASE, "width": "1024"}, "width"),
    ({**BASE, "width": 1024.5}, "width"),
    ({**BASE, "width": True}, "width"),
    ({**BASE, "width": 240}, "width"),
    ({**BASE, "width": 4112}, "width"),
    ({**BASE, "height": 1000}, "height"),
    ({**BASE, "quality": "ultra"}, "quality"),
    ({**BASE, "version": "flux-dev"}, "version"),
    ({**BASE, "webhookUrl": "ftp://example.test"}, "webhookUrl"),
]


@pytest.mark.parametrize("body, field", CASES)
def test_bad_rest_input_names_the_field(emu, api, body, field):
    response = api.submit(body)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}
    assert f'"{field}"' in error["message"]
    assert api.account().status_code == 200
    assert emu.stats()["jobs"]["total"] == 0
    assert emu.credits() == 100_000


def test_prompt_limits_apply_after_trimming(api):
    assert api.submit(prompt="  " + "x" * 2000 + "  ").status_code == 200
    assert api.submit(prompt=" y ").status_code == 200


GENERATE = "mutation G($input: GenerateInput!) { generate(input: $input) { id } }"
GENERATE_CASES = [
    ({"provider": "nope"}, None, "provider"),
    ({"input": {"text": "  "}}, None, "input.text"),
    ({}, {"width": 17}, "options.width"),
    ({}, {"height": 99999}, "options.height"),
    ({}, {"quality": "best"}, "options.quality"),
    ({}, {"version": "flux-dev"}, "options.version"),
]


@pytest.mark.parametrize("override, options, field", GENERATE_CASES)
def test_bad_graphql_input_names_the_field(api, override, options, field):
    value = {"type": "IMAGE", "provider": "flux-krea", "input": {"text": "ok"}, **override}
    if options is not None:
        value["options"] = options
    response = api.gql(GENERATE, {"input": value})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "BAD_USER_INPUT", "field": field}
    assert field in error["message"]
    assert error["path"] == ["generate"]


def test_rest_body_must_be_a_json_object(emu, api):
    url = f"{emu.base_url}/v1/text_to_image"
    headers = {"X-API-Key": emu.api_key, "Content-Type": "application/json"}
    for raw in (b"{oops", b"[]", b"null", b"42", b""):
        response = requests.post(url, data=raw, headers=headers, timeout=5)
        assert response.status_code == 400, raw
        assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert api.account().status_code == 200
