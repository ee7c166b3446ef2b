"""The one fingerprint of a request: what makes two requests the same image, in every form kept."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.client.fingerprint import (
    fingerprint,
    recognises,
    short_fingerprint,
    short_keyer,
)

BASE = ImageRequest(provider="flux-krea", prompt="a fox", width=512, height=512, quality="standard")


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "a fox in the snow"},
        {"provider": "flux-dev"},
        {"width": 768},
        {"height": 768},
        {"quality": "high"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_every_part_of_the_image_changes_the_fingerprint(change: dict[str, Any]) -> None:
    fields = {f.name: getattr(BASE, f.name) for f in dataclasses.fields(BASE)}
    fields.update(change, version=None)
    other = ImageRequest(**fields)
    assert fingerprint(other) != fingerprint(BASE)
    assert short_fingerprint(other) != short_fingerprint(BASE)
    assert not recognises(fingerprint(BASE), other)


def test_what_does_not_make_the_image_leaves_it_alone() -> None:
    same = ImageRequest(
        provider="flux-krea",
        prompt="  a fox ",
        width="512",
        height=512,
        webhook_url="https://hooks.example/x",
    )
    assert fingerprint(same) == fingerprint(BASE) and recognises(fingerprint(BASE), same)
    assert len(fingerprint(BASE)) == 64 and "fox" not in fingerprint(BASE)


def test_a_batch_item_key_is_the_short_form_ledgers_already_hold() -> None:
    # A ledger written before keeps matching: 12 digits of the digest of json.dumps of the fields.
    items, _ = build_items(
        entries_from_list(['a fox "quoted" é 🦊', {"prompt": "x", "quality": "high"}]),
        ItemDefaults(width=512, height=512),
    )
    for item in items:
        r = item.request
        digest = hashlib.sha256(
            json.dumps([r.provider, r.prompt, r.width, r.height, r.quality, r.version]).encode()
        )
        assert item.fingerprint == item.key == short_fingerprint(r) == digest.hexdigest()[:12]
        assert fingerprint(r).startswith(item.key)


#: Submission records' fingerprints as the provider wrote them before the record's and the batch's
#: forms became one (a digest of the fields as a JSON object), with the request each was made for.
EARLIER_RECORDS = [
    ("ad286d7a7ce6e14b48b7915d7910712f41d7defe3712ffdaa52b8ae93275d858", BASE),
    (
        "3b65e5d69853e1b0992abbabf9a84f64a3372dd5d870d14695203cf7b37144f5",
        ImageRequest(provider="flux-dev", prompt='é 🦊 "q"', width=768, height=512),
    ),
]


@pytest.mark.parametrize(("earlier", "request_"), EARLIER_RECORDS)
def test_a_submission_record_written_in_the_earlier_form_is_recognised(
    earlier: str, request_: ImageRequest
) -> None:
    assert recognises(earlier, request_)
    assert not recognises(earlier, dataclasses.replace(request_, prompt="another"))
    assert not recognises(short_fingerprint(request_), request_)  # a batch key is never a record's


@pytest.mark.parametrize(
    "prompt",
    ["a red fox", 'quotes " and \\ slashes', "ünïcödé and emoji \U0001f98a", "tab\there"],
)
@pytest.mark.parametrize("version", [None, "flux-dev"])
def test_the_batch_keyer_gives_the_short_fingerprint_of_each_prompt(prompt: str, version: str | None) -> None:
    options = ImageRequest(
        provider="flux-dev", prompt="x", width=768, height=512, quality="high", version=version
    )
    key = short_keyer(options)(prompt)
    request = dataclasses.replace(options, prompt=prompt)
    assert key.hex() == short_fingerprint(request)
