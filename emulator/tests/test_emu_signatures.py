"""``airflow_provider_doitong.client.webhooks``: signing and verifying."""

from __future__ import annotations

import hashlib
import hmac

from airflow_provider_doitong.client.webhooks import sign_payload, verify_signature


def test_sign_payload_is_the_hmac_sha256_header_value():
    body = b'{"id":"abc123xyz","status":"completed"}'
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign_payload(body, "s3cret") == f"sha256={expected}"


def test_verify_signature():
    body = b'{"id":"x"}'
    header = sign_payload(body, "s3cret")
    assert verify_signature(body, header, "s3cret")
    assert verify_signature(body, f"  {header} ", "s3cret")
    assert not verify_signature(body + b" ", header, "s3cret")
    assert not verify_signature(body, header, "other")
    assert not verify_signature(body, None, "s3cret")
    assert not verify_signature(body, "", "s3cret")
    assert not verify_signature(body, header.removeprefix("sha256="), "s3cret")
    assert not verify_signature(body, "sha256=ünïcode", "s3cret")
    assert not verify_signature(body, header, "")
