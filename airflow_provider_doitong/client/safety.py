"""Answers are data, never paths or destinations: pure checks on what the API hands back.

A job id (or any name: a dag, run or task id) becomes a file or folder name only through
:func:`safe_component`; an output URL (and every redirect
on the way to it) is fetched only once :func:`check_download_url` has accepted it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import idna
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from airflow_provider_doitong.client.errors import DoitongUntrustedOutput

#: The connection extra that widens the download hosts (named in every refusal).
ALLOWED_HOSTS_EXTRA = "allowed_download_hosts"
#: Output URLs longer than this are refused (no legitimate CDN URL comes close).
MAX_URL_CHARS = 8192
#: A name used as a path component as it is: letters, digits, ``_``, ``-`` and inner dots, neither
#: starting with ``.`` or ``-`` nor ending with ``.``, 128 characters at most.
SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_-])?")
#: How much of an unsafe name survives in its mapped form (before the digest that keeps it unique).
MAPPED_COMPONENT_CHARS = 80
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._-]")
_HOST_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})
#: An absolute URL: scheme, authority (to the first ``/``, ``?`` or ``#``) and the rest.
_ABSOLUTE = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>[/?#].*)?", re.S
)
#: An authority that ends with a port (after an IPv6 literal's bracket, if any).
_HAS_PORT = re.compile(r":[^:\]]*$")
#: A host as RFC 3986 allows it without percent-encoding: a name or IPv4 address, or an IPv6 literal.
_HOST = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?\.?|\[[0-9A-Fa-f:.]+\]")


def safe_component(value: str) -> str:
    """A file or folder name for a name from anywhere (a job id, a dag, run or task id) that cannot
    leave its folder: the one rule for every name the provider makes from a value.

    A :data:`SAFE_COMPONENT` is used as it is. Anything else (``../../escape_x``, a slash, a colon,
    a control character, a very long name) is mapped to its safe characters plus a digest of the
    whole value, so two different values never share a name:
    ``scheduled__2025-01-01T00:00:00+00:00`` becomes ``scheduled__2025-01-01T00_00_00_00_00-<8 hex
    digits>`` (the ledger folders already written are named so).
    """
    if SAFE_COMPONENT.fullmatch(value):
        return value
    cleaned = _UNSAFE_CHAR.sub("_", value).strip(".").lstrip("-") or "_"
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned[:MAPPED_COMPONENT_CHARS]}-{digest}"


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


@dataclass(frozen=True)
class JudgedUrl:
    """A URL split by the strict grammar of :func:`parse_strict_url`.

    :param url: the normalised URL: what is fetched (scheme and host lower case, IDNA host, no fragment).
    :param scheme: ``http`` or ``https`` (or whatever scheme the URL had, lower case).
    :param host: the host, lower case (an IPv6 literal without brackets).
    :param port: the port, if the URL named one.
    """

    url: str
    scheme: str
    host: str
    port: int | None


class UrlRefused(ValueError):
    """A URL :func:`parse_strict_url` refuses; the message names why, never the URL."""


def _ascii_host(host: str) -> str:
    """The host as it goes on the wire: an international name IDNA-encoded, else refused."""
    if host.isascii():
        return host
    try:  # IDNA 2008 with the UTS 46 mapping, as browsers and httpx read names
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        raise UrlRefused("its host is not a valid international domain name") from None


def parse_strict_url(url: object) -> JudgedUrl:
    """Split an absolute URL by RFC 3986, refusing anything HTTP libraries could read another way.

    The authority (between ``//`` and the first ``/``, ``?`` or ``#``) may hold only a host name
    (letters, digits, ``-``, ``.``, ``_``; an international name is IDNA-encoded), an IPv4 address
    or a bracketed IPv6 address, and a port: no user info (``@``), no percent-encoding, no other
    character. Backslashes, whitespace and control characters are refused anywhere. The
    normalised URL is then parsed again by urllib3 (what ``requests`` sends with) and httpx (the
    async client), and both must find the same host and port: the host judged is the host contacted.

    :raises UrlRefused: naming the reason.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise UrlRefused(f"not a URL of at most {MAX_URL_CHARS} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F or ch == "\\" for ch in url):
        raise UrlRefused("the URL holds spaces, control characters or backslashes")
    match = _ABSOLUTE.fullmatch(url)
    if match is None:
        raise UrlRefused("not an absolute URL")
    scheme, authority, rest = match.group("scheme").lower(), match.group("authority"), match.group("rest")
    if not authority:
        raise UrlRefused("the URL has no host")
    if "@" in authority:
        raise UrlRefused("the URL carries credentials (user info before '@')")
    if "%" in authority:
        raise UrlRefused("the URL's host is percent-encoded")
    host_part, _, port_text = (
        authority.rpartition(":") if _HAS_PORT.search(authority) else (authority, "", "")
    )
    host_text = _ascii_host(host_part)
    if not _HOST.fullmatch(host_text) or (port_text and not port_text.isdigit()):
        raise UrlRefused("the URL's host holds characters outside RFC 3986")
    port = int(port_text) if port_text else None
    if port is not None and not 0 < port < 65536:
        raise UrlRefused("the URL's port is out of range")
    host = host_text.lower()
    if not host.startswith("[") and not all(_HOST_LABEL.fullmatch(x) for x in host.rstrip(".").split(".")):
        raise UrlRefused("the URL's host is not a host name")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise UrlRefused("the URL's IPv6 address is not valid") from None
    normalized = f"{scheme}://{host}{f':{port}' if port is not None else ''}{(rest or '').partition('#')[0]}"
    judged = JudgedUrl(url=normalized, scheme=scheme, host=_normalize_host(host), port=port)
    _check_agreement(judged)
    return judged


def _check_agreement(judged: JudgedUrl) -> None:
    """Both HTTP libraries must read the host and port that were judged."""
    try:
        by_urllib3 = parse_url(judged.url)
        by_httpx = httpx.URL(judged.url)
    except (LocationParseError, httpx.InvalidURL, ValueError):
        raise UrlRefused("the URL cannot be read by the HTTP libraries") from None
    httpx_host = by_httpx.raw_host.decode("ascii", "replace")  # IDNA-encoded, as sent
    hosts = {_normalize_host(by_urllib3.host or ""), _normalize_host(httpx_host), judged.host}
    ports = {by_urllib3.port, by_httpx.port, judged.port}
    if len(hosts) != 1 or (len(ports) != 1 and not _default_port_only(ports, judged.scheme)):
        raise UrlRefused("the URL's host reads differently to the HTTP libraries")


def _default_port_only(ports: set[int | None], scheme: str) -> bool:
    return ports <= {None, 443 if scheme == "https" else 80}


def check_download_url(url: object, allowed_hosts: Sequence[str], *, via: str = "output URL") -> str:
    """Accept an output URL (or a redirect's target) for download, or refuse it.

    It must pass :func:`parse_strict_url` (so the host judged here is the host the HTTP library
    contacts), be ``https`` (plain ``http`` only to a loopback host), and be on one of
    ``allowed_hosts``. The refusal names the host and the connection extra that widens the list;
    it never repeats the whole URL (signed URLs carry tokens).

    :param via: what the URL is, for the message (``output URL``, ``redirect``).
    :returns: the normalised URL: fetch exactly this one.
    :raises DoitongUntrustedOutput: for any other URL.
    """
    try:
        judged = parse_strict_url(url)
    except UrlRefused as exc:
        raise DoitongUntrustedOutput(f"Doitong {via}: {exc}; refused") from None
    host = judged.host
    if judged.scheme == "http" and not is_loopback(host):
        raise DoitongUntrustedOutput(
            f"Doitong {via} on host {host!r} is plain http; only https is downloaded (http only from loopback)"
        )
    if judged.scheme not in ("http", "https"):
        raise DoitongUntrustedOutput(f"Doitong {via} on host {host!r}: scheme {judged.scheme!r} is not https")
    if not host_allowed(host, allowed_hosts):
        raise DoitongUntrustedOutput(
            f"Doitong {via} is on host {host!r}, which is not an allowed download host "
            f"({', '.join(allowed_hosts) or 'none'}); nothing was downloaded. If you trust it, add it "
            f"to the connection's extra {ALLOWED_HOSTS_EXTRA!r}"
        )
    return judged.url
