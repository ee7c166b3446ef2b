"""The ``doitong`` connection: its form, and how its fields become client settings. No Airflow imports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from airflow_provider_doitong.client.base import normalize_base_url
from airflow_provider_doitong.client.protocol import TRANSPORTS
from airflow_provider_doitong.contract import DEFAULT_BASE_URL, PLANS

CONN_TYPE = "doitong"
DEFAULT_CONN_ID = "doitong_default"
DEFAULT_TIMEOUT = 30.0

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["login", "schema", "port"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {"host": DEFAULT_BASE_URL, "password": "your Doitong API key"},
}

CONN_FIELDS: dict[str, Any] = {
    "plan": {
        "label": "Plan",
        "description": "The account's plan (free, starter, pro, enterprise); sets default pacing.",
        "schema": {"type": ["string", "null"], "enum": [*PLANS, None], "default": "pro"},
    },
    "transport": {
        "label": "Transport",
        "description": (
            "How jobs are submitted: graphql (the generate mutation), graphql-image (the generateImage "
            "mutation) or rest (POST /v1/text_to_image)."
        ),
        "schema": {"type": ["string", "null"], "enum": [*TRANSPORTS, None], "default": "graphql"},
    },
    "webhook_secret": {
        "label": "Webhook secret",
        "description": "Verifies X-Doitong-Signature on webhook deliveries.",
        "schema": {"type": ["string", "null"], "format": "password"},
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "description": "Timeout of each HTTP request to the API.",
        "schema": {"type": ["number", "null"], "minimum": 1, "default": DEFAULT_TIMEOUT},
    },
}


class DoitongConnectionInvalid(ValueError):
    """A ``doitong`` connection that cannot work (no key, a bad plan or URL...)."""


@dataclass(frozen=True, kw_only=True)
class ConnectionSettings:
    """A ``doitong`` connection, read and checked.

    :param conn_id: the connection id.
    :param base_url: the API's base URL.
    :param api_key: the API key (never logged).
    :param plan: the plan name.
    :param transport: ``graphql``, ``graphql-image`` or ``rest`` (how jobs are submitted).
    :param webhook_secret: the webhook secret, if set (never logged).
    :param timeout: seconds per HTTP request.
    """

    conn_id: str
    base_url: str
    api_key: str
    plan: str
    transport: str
    webhook_secret: str | None
    timeout: float

    def __repr__(self) -> str:
        return (
            f"ConnectionSettings(conn_id={self.conn_id!r}, base_url={self.base_url!r}, plan={self.plan!r}, "
            f"transport={self.transport!r})"
        )


def _extra_dict(extra: Any) -> dict[str, Any]:
    if isinstance(extra, dict):
        return extra
    if not extra:
        return {}
    try:
        value = json.loads(extra)
    except ValueError:
        raise DoitongConnectionInvalid("the connection's extra is not JSON") from None
    return value if isinstance(value, dict) else {}


def settings_from_fields(
    *,
    conn_id: str,
    host: str | None,
    schema: str | None,
    port: int | None,
    password: str | None,
    extra: Any,
) -> ConnectionSettings:
    """Read a connection's fields into :class:`ConnectionSettings`.

    Extras may be plain (``plan``) or prefixed as the UI stores them (``extra__doitong__plan``).

    :param conn_id: the connection id, for messages.
    :param host: base URL or bare host.
    :param schema: ``http`` or ``https`` for a bare host.
    :param port: port for a bare host.
    :param password: the API key.
    :param extra: the extra JSON (str or dict).
    :raises DoitongConnectionInvalid: naming what is wrong, never echoing a secret.
    """
    raw = _extra_dict(extra)
    prefix = f"extra__{CONN_TYPE}__"
    extras = {k.removeprefix(prefix): v for k, v in raw.items() if v not in (None, "")}
    api_key = (password or extras.get("api_key") or "").strip()
    if not api_key:
        raise DoitongConnectionInvalid(f"connection {conn_id!r} has no API key (set its password)")
    plan = str(extras.get("plan") or "pro").lower()
    if plan not in PLANS:
        raise DoitongConnectionInvalid(
            f"connection {conn_id!r}: plan must be one of {', '.join(PLANS)}, got {plan!r}"
        )
    transport = str(extras.get("transport") or "graphql").lower()
    if transport not in TRANSPORTS:
        raise DoitongConnectionInvalid(
            f"connection {conn_id!r}: transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}"
        )
    try:
        timeout = float(extras.get("timeout", DEFAULT_TIMEOUT))
        base_url = normalize_base_url(host, schema=schema, port=port)
    except ValueError as exc:
        raise DoitongConnectionInvalid(f"connection {conn_id!r}: {exc}") from None
    if timeout <= 0:
        raise DoitongConnectionInvalid(f"connection {conn_id!r}: timeout must be positive")
    return ConnectionSettings(
        conn_id=conn_id,
        base_url=base_url,
        api_key=api_key,
        plan=plan,
        transport=transport,
        webhook_secret=extras.get("webhook_secret"),
        timeout=timeout,
    )
