"""The connection's secrets kept out of what the provider returns, writes, emits and sends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from airflow_provider_doitong.batch.items import (
    ItemDefaults,
    build_items,
    entries_from_list,
    secret_items_problem,
)
from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.client.redaction import REDACTED, known_secrets, redact, secret_problem
from airflow_provider_doitong.hooks.connection import settings_from_fields
from airflow_provider_doitong.operators import lineage
from airflow_provider_doitong.triggers.doitong import DoitongJobTrigger

KEY = "sk-live-0123456789abcdef"
HOOK_SECRET = "whsec-fedcba9876543210"


def test_the_connection_names_its_secrets_longest_first() -> None:
    settings = settings_from_fields(
        conn_id="c", host=None, schema=None, port=None, password=KEY, extra={"webhook_secret": HOOK_SECRET}
    )
    assert set(settings.secrets) == {KEY, HOOK_SECRET}
    assert known_secrets(["abc", None, "", KEY, KEY + "-longer"]) == (KEY + "-longer", KEY)  # short ones kept


def test_redact_replaces_secrets_at_any_depth_and_leaves_the_rest() -> None:
    value = {
        "prompt": f"a fox {KEY}",
        "nested": [{"error": f"bad signature {HOOK_SECRET}"}, (KEY, 3)],
        KEY: None,
        "credits": 10,
        "ok": True,
    }
    got = redact(value, known_secrets([KEY, HOOK_SECRET]))
    assert got == {
        "prompt": f"a fox {REDACTED}",
        "nested": [{"error": f"bad signature {REDACTED}"}, (REDACTED, 3)],
        REDACTED: None,
        "credits": 10,
        "ok": True,
    }
    assert value["prompt"] == f"a fox {KEY}"  # a copy: the original is not changed
    assert redact(value, ()) is value


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"prompt": f"a fox {KEY}"}, "prompt"),
        ({"webhook_url": f"https://hooks.example.com/?k={HOOK_SECRET}"}, "webhook_url"),
    ],
)
def test_a_request_carrying_a_secret_is_refused_without_showing_it(
    overrides: dict[str, Any], field: str
) -> None:
    request = ImageRequest(provider="flux-krea", **{"prompt": "a fox", **overrides})
    problem = secret_problem(request, known_secrets([KEY, HOOK_SECRET]), conn_id="doitong_default")
    assert problem is not None and problem.startswith(
        f"{field} holds a secret of the connection 'doitong_default'"
    )
    assert KEY not in problem and HOOK_SECRET not in problem
    assert secret_problem(ImageRequest(provider="flux-krea", prompt="a fox"), (KEY,), conn_id="c") is None


def test_batch_items_carrying_a_secret_are_named_by_source() -> None:
    items, _ = build_items(entries_from_list(["a fox", f"{KEY}", "a tram"]), ItemDefaults())
    problem = secret_items_problem(items, (KEY,), conn_id="c")
    assert problem == (
        "1 of 3 items are refused; nothing was submitted: item 2: prompt holds a secret of the connection "
        "'c' (its API key or webhook secret), which would be sent to Doitong and kept with the job"
    )
    assert secret_items_problem(items, (HOOK_SECRET,), conn_id="c") is None


def test_lineage_reports_no_secret() -> None:
    pytest.importorskip("airflow.providers.openlineage")
    got = lineage.to_operator_lineage(
        lineage.batch_lineage(
            folder=f"/data/{KEY}/out",
            manifest=None,
            prompts_file=None,
            model="flux-krea",
            width=256,
            height=256,
            quality="standard",
            job_ids=[f"job-{KEY}"],
        ),
        (KEY,),
    )
    assert [d.name for d in got.outputs] == [f"/data/{REDACTED}/out"]
    assert list(got.run_facets["doitong"].jobIds) == [f"job-{REDACTED}"]


def test_a_trigger_event_carries_no_secret(doitong_conn: Any) -> None:
    # The API's answer for an unknown job names the job: an id that holds the key is echoed back.
    trigger = DoitongJobTrigger(job_id=f"job-{doitong_conn.api_key}", poll_interval=0.05)

    async def first() -> dict[str, Any]:
        event = await trigger.run().asend(None)
        return dict(event.payload)

    payload = asyncio.run(first())
    assert payload["status"] == "not_found"
    assert doitong_conn.api_key not in repr(payload) and REDACTED in payload["message"]
