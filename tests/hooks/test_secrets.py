"""The API key and the webhook secret appear nowhere: not in logs, output, errors nor reprs."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_doitong.client import DoitongError, ImageRequest, RetryPolicy
from airflow_provider_doitong.hooks.doitong import DoitongHook
from doitong_emulator import EmulatorAccount, FaultConfig

KEY = "dk_live_S3CR3T_4f9a8b7c6d5e"
WRONG_KEY = "dk_live_WR0NG_9e8d7c6b5a4f"
SECRET = "whsec_S3CR3T_0a1b2c3d4e5f"
SECRETS = (KEY, WRONG_KEY, SECRET)
GOOD, BAD = "doitong_secret_good", "doitong_secret_bad"
POLICY = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02)


def _set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, emu: Any, key: str) -> None:
    value = {
        "conn_type": "doitong",
        "host": emu.base_url,
        "password": key,
        "extra": {"webhook_secret": SECRET},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))


def _expect_error(errors: list[BaseException], call: Callable[[], Any]) -> None:
    try:
        call()
    except DoitongError as exc:
        errors.append(exc)
    else:
        raise AssertionError("expected a DoitongError")


def test_no_secret_leaks_across_failing_and_succeeding_runs(
    emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    emulator.add_account(
        EmulatorAccount(api_key=KEY, webhook_secret=SECRET, plan="pro", credits=1_000, name="s")
    )
    _set_conn(monkeypatch, GOOD, emulator, KEY)
    _set_conn(monkeypatch, BAD, emulator, WRONG_KEY)
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    texts: list[str] = []

    # 1. A wrong key: 401 from the sync and async clients, and a failed connection test.
    bad = DoitongHook(doitong_conn_id=BAD, retry_policy=POLICY)
    with bad.get_conn() as client:
        texts.append(repr(client))
        _expect_error(errors, client.get_account)
        _expect_error(errors, lambda: client.submit(ImageRequest(provider="flux-krea", prompt="x")))

    async def bad_async() -> None:
        async with await bad.get_async_conn() as aclient:
            texts.append(repr(aclient))
            try:
                await aclient.get_account()
            except DoitongError as exc:
                errors.append(exc)

    asyncio.run(bad_async())
    ok, message = bad.test_connection()
    assert ok is False
    texts.append(message)

    # 2. Server errors: reads retried with a warning each time, then given up.
    good = DoitongHook(doitong_conn_id=GOOD, retry_policy=POLICY)
    emulator.set_faults(FaultConfig(error_500_rate=1.0))
    with good.get_conn() as client:
        _expect_error(errors, lambda: client.get_job("some-job"))
    emulator.set_faults(FaultConfig(drop_rate=1.0))
    with good.get_conn() as client:
        _expect_error(errors, client.get_account)
    retry_warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "retrying" in r.getMessage()
    ]
    assert len(retry_warnings) == 2 * (POLICY.max_attempts - 1)  # the logs were captured

    # 3. Success: submit, wait, download, account, connection test.
    emulator.set_faults(FaultConfig())
    with good.get_conn() as client:
        job = client.submit(ImageRequest(provider="flux-krea", prompt="a quiet harbour", webhook_url=None))
        done = client.wait_for_job(job.id, poll_interval=0.02, deadline=time.time() + 10)
        assert client.download(done.url or "")[:2] == b"\xff\xd8"

    async def good_async() -> int:
        async with await good.get_async_conn() as aclient:
            return (await aclient.get_account()).credits

    assert asyncio.run(good_async()) == 990
    ok, message = good.test_connection()
    assert ok is True
    texts.append(message)

    texts += [repr(good.settings), str(good.settings), repr(bad.settings), repr(good), str(good)]
    for error in errors:
        texts += [str(error), repr(error), "".join(traceback.format_exception(error)), repr(error.__dict__)]
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), record.exc_text or ""]
    out, err = capfd.readouterr()
    texts += [caplog.text, out, err]

    assert len(errors) == 5
    haystack = "\n".join(texts)
    for secret in SECRETS:
        assert secret not in haystack


def test_hook_registers_both_secrets_with_airflows_masker(
    emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    masker = pytest.importorskip("airflow.sdk._shared.secrets_masker")
    emulator.add_account(EmulatorAccount(api_key=KEY, webhook_secret=SECRET, plan="pro", name="s"))
    _set_conn(monkeypatch, GOOD, emulator, KEY)
    assert DoitongHook(doitong_conn_id=GOOD).settings.webhook_secret == SECRET
    redacted = masker.redact(f"key={KEY} secret={SECRET}")
    assert KEY not in redacted and SECRET not in redacted
    assert "***" in redacted
