"""The known secrets (a connection's API key and webhook secret) kept out of everything the provider
returns, writes or emits, and out of what it sends as a prompt. No Airflow imports.

Airflow's own secret masker covers task logs once the connection is read; it does not touch XCom
values, files the provider writes, trigger events or OpenLineage facets. :func:`redact` is applied
at those exits (the operators' XCom value and asset event extra, a batch's manifest and contact
sheet, trigger events, lineage facets), and :func:`secret_problem` refuses a request that would
send a secret to the vendor (e.g. a prompt rendered from ``{{ conn.doitong_default.password }}``),
before anything is submitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar, cast

from airflow_provider_doitong.client.models import ImageRequest

T = TypeVar("T")

#: What a secret is replaced with.
REDACTED = "***"
#: Shorter values are not treated as secrets (they would blank out ordinary words); Airflow's masker
#: has the same floor by default.
MIN_SECRET_CHARS = 5


def known_secrets(values: Iterable[str | None]) -> tuple[str, ...]:
    """The values worth redacting, longest first (so a secret holding another is replaced whole).

    :param values: e.g. ``(api_key, webhook_secret)``; ``None`` and short values are left out.
    """
    found = {value for value in values if isinstance(value, str) and len(value) >= MIN_SECRET_CHARS}
    return tuple(sorted(found, key=len, reverse=True))


def redact(value: T, secrets: Iterable[str]) -> T:
    """``value`` with every secret replaced by :data:`REDACTED`, in strings at any depth.

    Dicts (keys and values), lists and tuples are copied; other values are returned as they are.

    :param value: a JSON-like value (an XCom result, a manifest, an event).
    :param secrets: from :func:`known_secrets`.
    """
    chosen = tuple(secrets)
    return cast(T, _redact(value, chosen)) if chosen else value


def _redact(value: Any, secrets: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {_redact(key, secrets): _redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(item, secrets) for item in value)
    return value


def holds_secret(text: Any, secrets: Iterable[str]) -> bool:
    """Whether a string holds any of the secrets.

    :param text: any value; only a string can hold one.
    """
    return isinstance(text, str) and any(secret in text for secret in secrets)


def secret_problem(
    request: ImageRequest, secrets: Iterable[str], *, conn_id: str, where: str = ""
) -> str | None:
    """Why a request must not be sent because it would carry a secret to the vendor, or ``None``.

    The one decision for both operators. The message names the parameter and the connection, never
    the secret nor the value holding it.

    :param request: the checked request; its free-text values (``prompt``, ``webhook_url``) are looked at.
    :param conn_id: the connection whose secret it is.
    :param where: where the request came from (``item 3``, ``line 4``), for a batch.
    """
    chosen = tuple(secrets)
    for name, value in (("prompt", request.prompt), ("webhook_url", request.webhook_url)):
        if holds_secret(value, chosen):
            return (
                f"{where}{': ' if where else ''}{name} holds a secret of the connection {conn_id!r} (its "
                "API key or webhook secret), which would be sent to Doitong and kept with the job"
            )
    return None
