"""The ``doitong`` connection: its form, and how its fields become client settings. No Airflow imports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from airflow_provider_doitong.client.base import check_api_key, normalize_base_url
from airflow_provider_doitong.client.choices import check_choice
from airflow_provider_doitong.client.contract import DEFAULT_BASE_URL, DEFAULT_DOWNLOAD_HOSTS, PLANS
from airflow_provider_doitong.client.downloads import (
    DEFAULT_DOWNLOAD_TIMEOUT,
    DEFAULT_MAX_DOWNLOAD_BYTES,
    MAX_BYTES_EXTRA,
    TIMEOUT_EXTRA,
    DownloadPolicy,
)
from airflow_provider_doitong.client.protocol import TRANSPORTS
from airflow_provider_doitong.client.redaction import known_secrets
from airflow_provider_doitong.client.safety import ALLOWED_HOSTS_EXTRA, host_of, is_loopback, parse_host_list

CONN_TYPE = "doitong"
#: The connection extra that lets the API key go over plain http to a non-loopback host.
INSECURE_HTTP_EXTRA = "allow_insecure_http"
DEFAULT_CONN_ID = "doitong_default"
#: The connection extra: no task submits a job that would take the account below this balance.
CREDIT_FLOOR_EXTRA = "credit_floor"
CACHE_PATH_EXTRA = "cache_path"
DEFAULT_TIMEOUT = 30.0

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["login", "schema", "port"],
    "relabeling": {"host": "Base URL", "password": "API key"},
    "placeholders": {"host": DEFAULT_BASE_URL, "password": "your Doitong API key"},
}

CONN_FIELDS: dict[str, Any] = {
    "plan": {
        "label": "Plan",
        "description": (
            "Your account's plan: sets a batch's jobs at once and requests per minute (free 1 and 10, "
            "starter 3 and 30, pro 10 and 60); the API's rate-limit headers override the rate. "
            "Empty: pro."
        ),
        # No default in the form: a connection saved with its fields untouched stores no plan (read
        # as pro), so Airflow's log masker, which masks every extra value, is not handed a 3-letter one.
        "schema": {"type": ["string", "null"], "enum": [*PLANS, None]},
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
    CREDIT_FLOOR_EXTRA: {
        "label": "Credit floor",
        "description": (
            "Credits kept for urgent work: no task using this connection submits a job that would take "
            "the account's balance below this (read before each submission wave). Empty: none."
        ),
        "schema": {"type": ["integer", "null"], "minimum": 0},
    },
    CACHE_PATH_EXTRA: {
        "label": "Image cache",
        "description": (
            "A folder (local, or a URI such as s3://bucket/prefix) where every task using this "
            "connection keeps the images it paid for and takes them instead of paying again for the "
            "same request. Empty: no cache."
        ),
        "schema": {"type": ["string", "null"]},
    },
    INSECURE_HTTP_EXTRA: {
        "label": "Allow plain http",
        "description": (
            "Send the API key over plain http to a host other than this machine (a trusted private "
            "network only). Off: such a base URL is refused; http to loopback is always allowed."
        ),
        "schema": {"type": ["boolean", "null"], "default": False},
    },
    ALLOWED_HOSTS_EXTRA: {
        "label": "Allowed download hosts",
        "description": (
            "Hosts output images may be downloaded from besides the API's own host and "
            f"{', '.join(DEFAULT_DOWNLOAD_HOSTS)}: comma-separated, e.g. cdn.example.com, *.example.net."
        ),
        "schema": {"type": ["string", "null"]},
    },
    MAX_BYTES_EXTRA: {
        "label": "Largest download (bytes)",
        "description": "A larger output fails the task instead of being read.",
        "schema": {"type": ["integer", "null"], "minimum": 1, "default": DEFAULT_MAX_DOWNLOAD_BYTES},
    },
    TIMEOUT_EXTRA: {
        "label": "Download time limit (seconds)",
        "description": "The longest one image download may take in all.",
        "schema": {"type": ["number", "null"], "minimum": 1, "default": DEFAULT_DOWNLOAD_TIMEOUT},
    },
}


class DoitongConnectionInvalid(ValueError):
    """A ``doitong`` connection that cannot work (no key, a bad plan or URL...)."""


@dataclass(frozen=True, kw_only=True)
class ConnectionSettings:
    """A ``doitong`` connection, read and checked. Its ``repr`` leaves out both secrets.

    :param api_key: never logged.
    :param plan: one of the contract's plans: a batch's jobs at once and requests per minute, until
        the API's rate-limit headers say otherwise (see ``docs/connection.md``).
    :param transport: ``graphql``, ``graphql-image`` or ``rest`` (how jobs are submitted).
    :param webhook_secret: ``None`` when unset; never logged.
    :param timeout: seconds per HTTP request.
    :param allowed_download_hosts: hosts added to the API's own and the vendor's CDN for downloads.
    :param max_download_bytes: the largest output read.
    :param download_timeout: seconds one download may take in all.
    :param credit_floor: the balance no submission may take the account below (``None``: none).
    :param cache_path: the image cache's folder (``None``: none); see :mod:`~airflow_provider_doitong.storage.cache`.

    The base URL holds no user name, password, query or fragment (they are refused), so the
    ``repr`` can show it.
    """

    conn_id: str
    base_url: str
    api_key: str
    plan: str
    transport: str
    webhook_secret: str | None
    timeout: float
    allowed_download_hosts: tuple[str, ...] = ()
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    download_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT
    credit_floor: int | None = None
    cache_path: str | None = None

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values never to return, write or emit: the API key and the webhook secret (see
        :mod:`~airflow_provider_doitong.client.redaction`)."""
        return known_secrets((self.api_key, self.webhook_secret))

    def download_policy(self) -> DownloadPolicy:
        """Where this connection's outputs may be downloaded from, and how much is read."""
        return DownloadPolicy.for_api(
            self.base_url,
            extra_hosts=self.allowed_download_hosts,
            max_bytes=self.max_download_bytes,
            time_limit=self.download_timeout,
        )

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

    :param conn_id: named in error messages.
    :param host: base URL or bare host.
    :param schema: ``http`` or ``https`` for a bare host.
    :param port: port for a bare host.
    :param password: the API key (else an ``api_key`` extra).
    :param extra: the extra JSON, as a string or already a dict.
    :raises DoitongConnectionInvalid: naming what is wrong, never echoing a secret.
    """
    raw = _extra_dict(extra)
    prefix = f"extra__{CONN_TYPE}__"
    extras = {k.removeprefix(prefix): v for k, v in raw.items() if v not in (None, "")}
    api_key = _api_key(conn_id, password or extras.get("api_key"))
    try:
        plan = check_choice("plan", str(extras.get("plan") or "pro").lower(), PLANS)
        transport = check_choice("transport", str(extras.get("transport") or "graphql").lower(), TRANSPORTS)
        timeout = float(extras.get("timeout", DEFAULT_TIMEOUT))
        base_url = normalize_base_url(host, schema=schema, port=port)
    except ValueError as exc:
        raise DoitongConnectionInvalid(f"connection {conn_id!r}: {exc}") from None
    if timeout <= 0:
        raise DoitongConnectionInvalid(f"connection {conn_id!r}: timeout must be positive")
    _check_plain_http(conn_id, base_url, extras.get(INSECURE_HTTP_EXTRA))
    downloads = _download_extras(conn_id, extras)
    try:
        credit_floor = read_credit_floor(extras.get(CREDIT_FLOOR_EXTRA))
        cache_path = read_cache_path(extras.get(CACHE_PATH_EXTRA))
    except ValueError as exc:
        raise DoitongConnectionInvalid(f"connection {conn_id!r}: {exc}") from None
    return ConnectionSettings(
        conn_id=conn_id,
        base_url=base_url,
        api_key=api_key,
        plan=plan,
        transport=transport,
        webhook_secret=extras.get("webhook_secret"),
        timeout=timeout,
        credit_floor=credit_floor,
        cache_path=cache_path,
        **downloads,
    )


def read_credit_floor(value: object) -> int | None:
    """A credit floor (the connection's extra or an operator's parameter): a whole number >= 0, or ``None``.

    :raises ValueError: naming what is wrong.
    """
    if value is None or value == "":
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or len(text) > 12:
        raise ValueError(f"{CREDIT_FLOOR_EXTRA} must be a whole number of credits >= 0, got {value!r}")
    return int(text)


def read_cache_path(value: object) -> str | None:
    """An image cache's folder (the connection's extra or an operator's parameter): a path or URI,
    or ``None``.

    :raises ValueError: naming what is wrong.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not value.strip() or not value.isprintable() or len(value) > 2048:
        raise ValueError(f"{CACHE_PATH_EXTRA} must be a folder's path or URI, got {value!r}")
    return value.strip()


def _api_key(conn_id: str, value: object) -> str:
    """The key, sendable as a header value (never repeated in a message)."""
    if not isinstance(value, str) or not value.strip():
        raise DoitongConnectionInvalid(f"connection {conn_id!r} has no API key (set its password)")
    try:
        return check_api_key(value)
    except ValueError as exc:
        raise DoitongConnectionInvalid(f"connection {conn_id!r}: {exc}") from None


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _check_plain_http(conn_id: str, base_url: str, allow: object) -> None:
    """Refuse a base URL that would send the key in clear text, unless the extra allows it."""
    text = str(allow).strip().lower() if allow is not None else "false"
    if text not in _TRUE + _FALSE:
        raise DoitongConnectionInvalid(
            f"connection {conn_id!r}: {INSECURE_HTTP_EXTRA} must be true or false, got {allow!r}"
        )
    host = host_of(base_url)
    if base_url.startswith("http://") and not is_loopback(host) and text in _FALSE:
        raise DoitongConnectionInvalid(
            f"connection {conn_id!r}: the base URL is plain http to {host!r}, which would send the API "
            f"key unencrypted; use https, or set the extra {INSECURE_HTTP_EXTRA!r} to true on a "
            "trusted private network"
        )


def _download_extras(conn_id: str, extras: dict[str, Any]) -> dict[str, Any]:
    """The download extras, checked: hosts, byte cap, time limit."""
    try:
        hosts = parse_host_list(extras.get(ALLOWED_HOSTS_EXTRA))
    except ValueError as exc:
        raise DoitongConnectionInvalid(f"connection {conn_id!r}: {exc}") from None
    values: dict[str, float] = {}
    for key, default, cast in (
        (MAX_BYTES_EXTRA, DEFAULT_MAX_DOWNLOAD_BYTES, int),
        (TIMEOUT_EXTRA, DEFAULT_DOWNLOAD_TIMEOUT, float),
    ):
        try:
            values[key] = cast(extras.get(key, default))
        except (TypeError, ValueError):
            values[key] = 0
        if values[key] <= 0:
            raise DoitongConnectionInvalid(
                f"connection {conn_id!r}: {key} must be a positive number, got {extras.get(key)!r}"
            )
    return {
        "allowed_download_hosts": hosts,
        "max_download_bytes": int(values[MAX_BYTES_EXTRA]),
        "download_timeout": float(values[TIMEOUT_EXTRA]),
    }
