"""Answers are data, never paths or destinations: pure checks on what the API hands back.

A job id becomes a file name only through :func:`safe_file_stem`; an output URL (and every redirect
on the way to it) is fetched only once :func:`check_download_url` has accepted it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from airflow_provider_doitong.client.errors import DoitongUntrustedOutput

#: The connection extra that widens the download hosts (named in every refusal).
ALLOWED_HOSTS_EXTRA = "allowed_download_hosts"
#: Output URLs longer than this are refused (no legitimate CDN URL comes close).
MAX_URL_CHARS = 8192
#: Job ids (or any name) used as a file stem as they are: a safe charset, a length limit.
SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
#: How much of an unsafe name survives in its mapped stem (before the hash that keeps it unique).
MAPPED_STEM_CHARS = 64
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9_-]+")
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def safe_file_stem(name: str) -> str:
    """A file name stem for a job id (or any name from an answer) that cannot leave its folder.

    An id made of letters, digits, ``_`` and ``-`` (128 characters at most, starting with a letter
    or digit) is used as it is. Anything else (``../../escape_x``, a slash, a dot, a control
    character, a very long id) is mapped to its safe characters plus a hash of the whole id, so two
    different ids never share a file: ``../../escape_x`` becomes ``escape_x-<12 hex digits>``.
    """
    if SAFE_STEM.fullmatch(name):
        return name
    cleaned = _UNSAFE_RUN.sub("_", name).strip("_-")[:MAPPED_STEM_CHARS].rstrip("_-")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{cleaned or 'job'}-{digest}"


def _normalize_host(host: str) -> str:
    return host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_host_entry(entry: str) -> str:
    host = _normalize_host(entry)
    name = host[2:] if host.startswith("*.") else host
    if _is_ip(host):
        return host
    labels = name.split(".")
    if not name or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{ALLOWED_HOSTS_EXTRA}: {entry.strip()!r} is not a host name (write cdn.example.com or "
            "*.example.com, without scheme, port or path)"
        )
    if host.startswith("*.") and len(labels) < 2:
        raise ValueError(f"{ALLOWED_HOSTS_EXTRA}: {entry.strip()!r} would match a whole top-level domain")
    return host


def parse_host_list(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Host entries from a connection extra: a list, or one comma- or space-separated string.

    Entries are exact hosts (``cdn.example.com``, ``10.0.0.5``) or ``*.example.com`` for any
    subdomain of ``example.com`` (not ``example.com`` itself).

    :raises ValueError: for an entry that is not a host name, naming it.
    """
    if value is None:
        return ()
    items: Iterable[str]
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, Sequence) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise ValueError(f"{ALLOWED_HOSTS_EXTRA} must be a list of host names or a comma-separated string")
    return tuple(dict.fromkeys(_check_host_entry(item) for item in items if item.strip()))


def host_allowed(host: str, allowed_hosts: Iterable[str]) -> bool:
    """Whether ``host`` is one of the entries (exact, or a subdomain of a ``*.`` entry)."""
    host = _normalize_host(host)
    for entry in allowed_hosts:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and len(host) > len(entry) - 1:
                return True
        elif host == entry:
            return True
    return False


def is_loopback(host: str) -> bool:
    """Whether a host is this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    host = _normalize_host(host)
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(url: str) -> str:
    """The host of a URL, lower case, or ``""`` when it has none."""
    try:
        return _normalize_host(urlsplit(url).hostname or "")
    except ValueError:
        return ""


def check_download_url(url: object, allowed_hosts: Sequence[str], *, via: str = "output URL") -> str:
    """Accept an output URL (or a redirect's target) for download, or refuse it.

    It must be ``https`` (plain ``http`` only to a loopback host), carry no user name or password,
    and be on one of ``allowed_hosts``. The refusal names the host and the connection extra that
    widens the list; it never repeats the whole URL (signed URLs carry tokens).

    :param via: what the URL is, for the message (``output URL``, ``redirect``).
    :raises DoitongUntrustedOutput: for any other URL.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise DoitongUntrustedOutput(f"Doitong {via}: not a URL of at most {MAX_URL_CHARS} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise DoitongUntrustedOutput(f"Doitong {via}: the URL holds spaces or control characters")
    try:
        parts = urlsplit(url)
        host = _normalize_host(parts.hostname or "")
        parts.port  # noqa: B018 (raises ValueError for a port out of range)
    except ValueError:
        raise DoitongUntrustedOutput(f"Doitong {via}: not a valid URL") from None
    if not host:
        raise DoitongUntrustedOutput(f"Doitong {via}: the URL has no host")
    if parts.scheme == "http" and not is_loopback(host):
        raise DoitongUntrustedOutput(
            f"Doitong {via} on host {host!r} is plain http; only https is downloaded (http only from loopback)"
        )
    if parts.scheme not in ("http", "https"):
        raise DoitongUntrustedOutput(f"Doitong {via} on host {host!r}: scheme {parts.scheme!r} is not https")
    if "@" in parts.netloc:
        raise DoitongUntrustedOutput(f"Doitong {via} on host {host!r} carries credentials; refused")
    if not host_allowed(host, allowed_hosts):
        raise DoitongUntrustedOutput(
            f"Doitong {via} is on host {host!r}, which is not an allowed download host "
            f"({', '.join(allowed_hosts) or 'none'}); nothing was downloaded. If you trust it, add it "
            f"to the connection's extra {ALLOWED_HOSTS_EXTRA!r}"
        )
    return url
