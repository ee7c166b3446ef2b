"""``DoitongHook`` with connections defined as Airflow does it, against the emulator over loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from airflow_provider_doitong.client import (
    AsyncDoitongClient,
    DoitongClient,
    DoitongUnauthorized,
    ImageRequest,
    JobStatus,
    RetryPolicy,
)
from airflow_provider_doitong.client.contract import PLANS
from airflow_provider_doitong.hooks.connection import DoitongConnectionInvalid
from airflow_provider_doitong.hooks.doitong import DoitongHook
from doitong_emulator import EmulatorAccount, FaultConfig

CONN_ID = "doitong_hooktest"
ENV = f"AIRFLOW_CONN_{CONN_ID.upper()}"
#: A key with characters a URI must escape.
ODD_KEY = "dk/live+key=1&x"
FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02)


def _port(emu: Any) -> int:
    return int(emu.base_url.rsplit(":", 1)[1])


def _account_requests(emu: Any) -> list[int]:
    return [entry["status"] for entry in emu.request_log() if entry["kind"] == "account"]


# Each form: a function of the emulator giving the env var's value, and the plan it should read.
CONNECTION_FORMS: dict[str, tuple[Callable[[Any], str], str, str]] = {
    "json-full-url": (
        lambda emu: json.dumps(
            {"conn_type": "doitong", "host": emu.base_url, "password": ODD_KEY, "extra": {"plan": "starter"}}
        ),
        "starter",
        "graphql",
    ),
    "json-prefixed-extras": (
        lambda emu: json.dumps(
            {
                "conn_type": "doitong",
                "host": emu.base_url,
                "password": ODD_KEY,
                "extra": {"extra__doitong__plan": "free", "extra__doitong__transport": "rest"},
            }
        ),
        "free",
        "rest",
    ),
    "json-bare-host-schema-port": (
        lambda emu: json.dumps(
            {
                "conn_type": "doitong",
                "host": "127.0.0.1",
                "schema": "http",
                "port": _port(emu),
                "password": ODD_KEY,
            }
        ),
        "pro",
        "graphql",
    ),
    "uri-schema-as-scheme": (
        lambda emu: f"doitong://:{quote(ODD_KEY, safe='')}@127.0.0.1:{_port(emu)}/http?plan=pro",
        "pro",
        "graphql",
    ),
    "uri-prefixed-extras": (
        lambda emu: (
            f"doitong://:{quote(ODD_KEY, safe='')}@127.0.0.1:{_port(emu)}/http"
            "?extra__doitong__plan=enterprise&extra__doitong__transport=rest"
        ),
        "enterprise",
        "rest",
    ),
    "uri-host-with-protocol": (
        lambda emu: f"doitong://http://:{quote(ODD_KEY, safe='')}@127.0.0.1:{_port(emu)}?plan=starter",
        "starter",
        "graphql",
    ),
    "uri-encoded-base-url": (
        lambda emu: f"doitong://:{quote(ODD_KEY, safe='')}@{quote(emu.base_url, safe='')}",
        "pro",
        "graphql",
    ),
}


@pytest.fixture
def odd_key_emulator(emulator: Any) -> Any:
    emulator.add_account(EmulatorAccount(api_key=ODD_KEY, plan="pro", credits=777, name="odd"))
    return emulator


@pytest.mark.parametrize("form", sorted(CONNECTION_FORMS))
def test_connection_forms(odd_key_emulator: Any, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    emu = odd_key_emulator
    make_value, plan, transport = CONNECTION_FORMS[form]
    monkeypatch.setenv(ENV, make_value(emu))
    hook = DoitongHook(doitong_conn_id=CONN_ID)
    settings = hook.settings
    assert settings.base_url == emu.base_url
    assert settings.api_key == ODD_KEY
    assert (settings.plan, settings.transport) == (plan, transport)
    with hook.get_conn() as client:
        assert isinstance(client, DoitongClient)
        assert client.transport == transport
        assert client.get_account().credits == 777
    assert _account_requests(emu) == [200]


@pytest.mark.filterwarnings("ignore:ProvidersManager.hooks is deprecated")
@pytest.mark.parametrize(
    "connection_class", ["airflow.models.connection", "airflow.sdk.definitions.connection"]
)
@pytest.mark.parametrize(
    ("host", "schema", "port"),
    [("{base_url}", None, None), ("127.0.0.1", "http", "{port}")],
    ids=["host-is-base-url", "bare-host"],
)
def test_connection_test_as_airflow_runs_it(
    odd_key_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    connection_class: str,
    host: str,
    schema: str | None,
    port: str | None,
) -> None:
    """The UI's test button: the form becomes a Connection, goes through ``get_uri()`` into an env
    var, and ``Connection.test_connection()`` builds the hook from it."""
    import importlib

    emu = odd_key_emulator
    cls = importlib.import_module(connection_class).Connection
    if not hasattr(cls, "test_connection"):
        pytest.skip(f"{connection_class}.Connection cannot test itself before Airflow 3.3")
    conn = cls(
        conn_id=CONN_ID,
        conn_type="doitong",
        host=host.format(base_url=emu.base_url),
        schema=schema,
        port=int(port.format(port=_port(emu))) if port else None,
        password=ODD_KEY,
        extra=json.dumps({"extra__doitong__plan": "pro", "extra__doitong__webhook_secret": "whsec-abcdef"}),
    )
    monkeypatch.setenv(ENV, conn.get_uri())
    if connection_class.startswith("airflow.sdk"):
        monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "client")
    ok, message = conn.test_connection()
    assert ok, message
    assert message == "Connected to Doitong: plan pro, 777 credits"
    assert _account_requests(emu) == [200]


def test_get_conn_and_get_async_conn(doitong_conn: Any) -> None:
    emu = doitong_conn
    hook = DoitongHook(retry_policy=FAST)
    assert hook.settings.webhook_secret == emu.webhook_secret
    request = ImageRequest(provider="flux-dev", prompt="a red fox", width=768, height=512)
    with hook.get_conn() as client:
        assert client.retry_policy is FAST
        job = client.submit(request)

    async def read() -> tuple[Any, Any]:
        aclient = await hook.get_async_conn(max_connections=4)
        assert isinstance(aclient, AsyncDoitongClient) and aclient.retry_policy is FAST
        async with aclient:
            done = await aclient.wait_for_job(job.id, poll_interval=0.02, deadline=time.time() + 10)
            return done, await aclient.get_account()

    done, account = asyncio.run(read())
    assert done.status is JobStatus.COMPLETED and (done.width, done.height) == (768, 512)
    assert account.credits == 100_000 - 50  # flux-dev costs 50
    assert [e["kind"] for e in emu.request_log()][0] == "submit"


def test_every_client_of_the_hook_keeps_the_accounts_board_for_spent_windows(
    doitong_conn: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOITONG_BOARD_DIR", str(tmp_path / "boards"))
    hook = DoitongHook()
    with hook.get_conn() as client:
        board = client.board
    aclient = asyncio.run(hook.get_async_conn())
    asyncio.run(aclient.aclose())
    assert board is not None and aclient.board == board
    assert board.path.parent == tmp_path / "boards" and doitong_conn.api_key not in board.path.name
    assert client.slots is not None and aclient.slots is not None
    assert client.slots.concurrency == PLANS[hook.settings.plan].concurrent_jobs  # the connection's plan
    assert client.slots.folder == tmp_path / "boards" and client.slots.account == aclient.slots.account
    monkeypatch.setenv("DOITONG_BOARD_DIR", "off")
    with hook.get_conn() as client:
        assert client.board is None and client.slots is None


def test_async_settings_read_the_same_connection(doitong_conn: Any) -> None:
    hook = DoitongHook()
    assert asyncio.run(hook.aget_settings()) == hook.settings


def test_default_retry_policy(doitong_conn: Any) -> None:
    with DoitongHook().get_conn() as client:
        assert client.retry_policy == RetryPolicy()


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        pytest.param({"host": "http://127.0.0.1:1"}, "has no API key", id="missing-key"),
        pytest.param(
            {"password": "k-123456", "extra": {"plan": "platinum"}}, "plan must be one of", id="bad-plan"
        ),
        pytest.param(
            {"password": "k-123456", "extra": {"extra__doitong__transport": "soap"}},
            "transport must be one of",
            id="bad-transport",
        ),
        pytest.param({"password": "k-123456", "host": "ftp://x"}, "http(s)://host[:port]", id="bad-host"),
    ],
)
def test_invalid_connection(monkeypatch: pytest.MonkeyPatch, conn: dict[str, Any], message: str) -> None:
    monkeypatch.setenv(ENV, json.dumps({"conn_type": "doitong", **conn}))
    hook = DoitongHook(doitong_conn_id=CONN_ID)
    with pytest.raises(DoitongConnectionInvalid) as info:
        hook.get_conn()
    assert message in str(info.value) and CONN_ID in str(info.value)
    with pytest.raises(DoitongConnectionInvalid):
        asyncio.run(hook.get_async_conn())
    ok, text = hook.test_connection()
    assert ok is False and message in text


def test_unknown_connection_id_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    hook = DoitongHook(doitong_conn_id="doitong_nowhere")
    ok, message = hook.test_connection()
    assert ok is False
    assert "doitong_nowhere" in message


def test_test_connection_ok_in_one_request(doitong_conn: Any) -> None:
    ok, message = DoitongHook().test_connection()
    assert (ok, message) == (True, "Connected to Doitong: plan pro, 100000 credits")
    assert [(e["kind"], e["status"]) for e in doitong_conn.request_log()] == [("account", 200)]


@pytest.mark.parametrize(
    ("faults", "status", "fragment"),
    [
        pytest.param(None, 401, "UNAUTHENTICATED", id="wrong-key"),
        pytest.param(FaultConfig(error_500_rate=1.0), 500, "HTTP 500", id="server-error"),
        pytest.param(FaultConfig(drop_rate=1.0), 0, "no answer", id="dropped"),
    ],
)
def test_test_connection_fails_in_one_request(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, faults: FaultConfig | None, status: int, fragment: str
) -> None:
    key = "wrong-key-987654" if faults is None else emulator.api_key
    monkeypatch.setenv(ENV, json.dumps({"conn_type": "doitong", "host": emulator.base_url, "password": key}))
    if faults is not None:
        emulator.set_faults(faults)
    hook = DoitongHook(doitong_conn_id=CONN_ID, retry_policy=RetryPolicy(max_attempts=5, backoff_base=0.01))
    ok, message = hook.test_connection()
    assert ok is False
    assert fragment in message
    assert [e["status"] for e in emulator.request_log()] == [status]  # no retries
    assert key not in message


def test_get_conn_surfaces_unauthorized(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        ENV, json.dumps({"conn_type": "doitong", "host": emulator.base_url, "password": "nope-nope"})
    )
    with DoitongHook(doitong_conn_id=CONN_ID).get_conn() as client, pytest.raises(DoitongUnauthorized):
        client.get_account()
    assert [e["status"] for e in emulator.request_log()] == [401]
