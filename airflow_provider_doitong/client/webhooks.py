"""Signing and verifying Doitong webhook deliveries.

A delivery carries the header :data:`~airflow_provider_doitong.client.contract.SIGNATURE_HEADER` whose value
is :data:`~airflow_provider_doitong.client.contract.SIGNATURE_PREFIX` followed by the hex HMAC-SHA256 of the
raw request body under the account's webhook secret. There is no timestamp in the scheme, so a
receiver cannot reject replays by age: deduplicate deliveries on the job ``id``.
"""

from __future__ import annotations

import hashlib
import hmac

from airflow_provider_doitong.client.contract import SIGNATURE_HEADER, SIGNATURE_PREFIX

__all__ = ["SIGNATURE_HEADER", "sign_payload", "verify_signature"]


def sign_payload(body: bytes, secret: str) -> str:
    """Sign a webhook body.

    :param body: the raw request body, exactly as sent.
    :param secret: the account's webhook secret.
    :return: the full header value, ``sha256=<hex>``.
    """
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_PREFIX}{digest}"


def verify_signature(body: bytes, header_value: str | None, secret: str) -> bool:
    """Check a webhook delivery's signature in constant time.

    :param body: the raw request body, exactly as received (before any JSON parsing).
    :param header_value: the value of the signature header, or ``None`` when it is absent.
    :param secret: the account's webhook secret.
    :return: ``True`` only when the header is present and matches the body.
    """
    if not header_value or not secret:
        return False
    expected = sign_payload(body, secret)
    return hmac.compare_digest(expected.encode("ascii"), header_value.strip().encode("utf-8", "replace"))
