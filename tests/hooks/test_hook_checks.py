"""The hook refuses connections of another type, masks from coroutines, and re-reads a rotated key."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from airflow_provider_doitong.hooks import doitong as hook_module
from airflow_provider_doitong.hooks.connection import DoitongConnectionInvalid
from airflow_provider_doitong.hooks.doitong import DoitongHook

CONN_ID = "doitong_checks"
ENV = f"AIRFLOW_CONN_{CONN_ID.upper()}"


def _set(monkeypatch: pytest.MonkeyPatch, **conn: Any) -> None:
    monkeypatch.setenv(ENV, json.dumps(conn))


@pytest.mark.parametrize("conn_type", ["http", "generic", None])
def test_a_connection_of_another_type_is_refused(
    monkeypatch: pytest.MonkeyPatch, conn_type: str | None
) -> None:
    _set(monkeypatch, conn_type=conn_type, host="http://127.0.0.1:9", password="k-123456789")
    hook = DoitongHook(doitong_conn_id=CONN_ID)
    with pytest.raises(DoitongConnectionInvalid, match=f"is of type {conn_type!r}, not 'doitong'"):
        hook.get_conn()
    with pytest.raises(DoitongConnectionInvalid, match="not 'doitong'"):
        asyncio.run(hook.get_async_conn())
    ok, message = hook.test_connection()
    assert ok is False and "not 'doitong'" in message and "k-123456789" not in message


def test_async_reads_mask_with_the_async_variant(monkeypatch: pytest.MonkeyPatch) -> None:
    if hook_module.amask_secret is None:
        pytest.skip("this Airflow has no async masking")
    masked: list[str] = []

    async def record(secret: str, name: str | None = None) -> None:
        masked.append(secret)

    def refuse(secret: str, name: str | None = None) -> None:
        raise AssertionError("the blocking mask_secret was called from a coroutine")

    monkeypatch.setattr(hook_module, "amask_secret", record)
    monkeypatch.setattr(hook_module, "mask_secret", refuse)
    _set(
        monkeypatch,
        conn_type="doitong",
        host="http://127.0.0.1:9",
        password="k-async-123456",
        extra={"webhook_secret": "whsec-async-123456"},
    )
    asyncio.run(DoitongHook(doitong_conn_id=CONN_ID).aget_settings())
    assert masked == ["k-async-123456", "whsec-async-123456"]


def test_reread_settings_sees_a_rotated_key(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, conn_type="doitong", host="http://127.0.0.1:9", password="k-old-123456")
    hook = DoitongHook(doitong_conn_id=CONN_ID)
    assert hook.settings.api_key == "k-old-123456"
    _set(monkeypatch, conn_type="doitong", host="http://127.0.0.1:9", password="k-new-123456")
    assert hook.settings.api_key == "k-old-123456"  # cached for the hook's life...
    assert hook.reread_settings().api_key == "k-new-123456"  # ...until read again
    assert hook.settings.api_key == "k-new-123456"
