"""Sans-IO downloads: every decision about fetching an output, made once for both clients.

A :class:`Download` is one attempt: it says which URL to GET (the output URL, then each redirect,
each re-checked against the allowed hosts), which headers to send (never an API key), when to stop
reading (the byte cap, the time limit) and whether what came is an image. The sync and async
clients only move the bytes; the one retry policy decides whether to make another attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin

from airflow_provider_doitong.client import contract
from airflow_provider_doitong.client.errors import (
    DoitongBadImage,
    DoitongDownloadTimeout,
    DoitongDownloadTooLarge,
    DoitongProtocolError,
    classify,
)
from airflow_provider_doitong.client.images import IMAGE_TYPES, check_image
from airflow_provider_doitong.client.protocol import decode_body
from airflow_provider_doitong.client.safety import check_download_url, host_of

#: The largest download read by default: a 4096x4096 image is at most ~48 MiB even as an
#: uncompressed RGB PNG, so 64 MiB holds any output with room to spare.
DEFAULT_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
#: The longest one download attempt may take, all redirects and the whole body included.
DEFAULT_DOWNLOAD_TIMEOUT = 300.0
#: Redirects followed per download (each one re-checked against the allowed hosts).
MAX_DOWNLOAD_REDIRECTS = 5
#: Bytes of an error answer (4xx/5xx) read to classify it; the rest is never read.
MAX_ERROR_BODY_BYTES = 64 * 1024
#: Bytes asked for per read.
CHUNK_BYTES = 64 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: The connection extras that set the cap and the time limit (named in messages).
MAX_BYTES_EXTRA = "max_download_bytes"
TIMEOUT_EXTRA = "download_timeout"
WHAT = "image download"
_ACCEPT = ", ".join(kind.media_type for kind in IMAGE_TYPES)


@dataclass(frozen=True, kw_only=True)
class DownloadPolicy:
    """Where outputs may come from and how much of them is read.

    :param allowed_hosts: host entries (exact, or ``*.example.com``); see
        :func:`~airflow_provider_doitong.client.safety.parse_host_list`.
    :param max_bytes: the largest body read; a larger one fails the download at once (final).
    :param time_limit: seconds one attempt may take in all (every read included, not each read).
    :param max_redirects: redirects followed per attempt.
    """

    allowed_hosts: tuple[str, ...]
    max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES
    time_limit: float = DEFAULT_DOWNLOAD_TIMEOUT
    max_redirects: int = MAX_DOWNLOAD_REDIRECTS

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"{MAX_BYTES_EXTRA} must be a positive number of bytes")
        if self.time_limit <= 0:
            raise ValueError(f"{TIMEOUT_EXTRA} must be a positive number of seconds")
        if self.max_redirects < 0:
            raise ValueError("max_redirects must not be negative")

    @classmethod
    def for_api(
        cls,
        base_url: str,
        *,
        extra_hosts: Iterable[str] = (),
        max_bytes: int | None = None,
        time_limit: float | None = None,
    ) -> DownloadPolicy:
        """The policy for one API: its own host, the vendor's CDN, and ``extra_hosts``."""
        hosts = (host_of(base_url), *contract.DEFAULT_DOWNLOAD_HOSTS, *extra_hosts)
        return cls(
            allowed_hosts=tuple(dict.fromkeys(host for host in hosts if host)),
            max_bytes=DEFAULT_MAX_DOWNLOAD_BYTES if max_bytes is None else max_bytes,
            time_limit=DEFAULT_DOWNLOAD_TIMEOUT if time_limit is None else time_limit,
        )


def request_headers(user_agent: str) -> dict[str, str]:
    """The headers of every download request: no ``Authorization``, no ``X-API-Key``, ever.

    ``Accept-Encoding: identity`` keeps the byte cap a cap on what is held: a compressed answer is
    not unpacked (it is then not an image, and refused).
    """
    return {"User-Agent": user_agent, "Accept": _ACCEPT, "Accept-Encoding": "identity"}


class Download:
    """The decisions of one download attempt, fed by a client that only moves bytes.

    The client GETs :attr:`url` without following redirects, hands the status line to
    :meth:`answer` (which returns the next URL for a redirect), feeds the body to :meth:`feed`
    while it returns ``True``, and ends with :meth:`result`.

    :param clock: a monotonic clock, for the time limit.
    :raises DoitongUntrustedOutput: for an output URL the policy refuses (nothing is fetched).
    """

    def __init__(
        self, url: str, *, policy: DownloadPolicy, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.policy = policy
        self.url = check_download_url(url, policy.allowed_hosts)
        self.hops = 0
        self.status = 0
        self._clock = clock
        self._deadline = clock() + policy.time_limit
        self._body = bytearray()

    def remaining(self) -> float:
        """Seconds left for this attempt.

        :raises DoitongDownloadTimeout: when none are left.
        """
        left = self._deadline - self._clock()
        if left <= 0:
            raise self.timed_out()
        return left

    def timed_out(self) -> DoitongDownloadTimeout:
        """The error for an attempt past its time limit."""
        return DoitongDownloadTimeout(
            f"Doitong {WHAT}: not finished within {self.policy.time_limit:g}s "
            f"(connection extra {TIMEOUT_EXTRA!r}; {len(self._body)} bytes read)"
        )

    def answer(self, status: int, headers: Mapping[str, str]) -> str | None:
        """Judge a status line: the next URL to GET for a redirect, else ``None`` (read the body).

        :raises DoitongUntrustedOutput: for a redirect to a place the policy refuses.
        :raises DoitongProtocolError: for a redirect without ``Location`` or one too many.
        :raises DoitongDownloadTooLarge: when ``Content-Length`` is over the cap.
        """
        self.remaining()
        if status in REDIRECT_STATUSES:
            location = (headers.get("Location") or "").strip()
            if not location:
                raise DoitongProtocolError(f"Doitong {WHAT}: a redirect without a Location", status=status)
            if self.hops >= self.policy.max_redirects:
                raise DoitongProtocolError(
                    f"Doitong {WHAT}: more than {self.policy.max_redirects} redirects", status=status
                )
            self.hops += 1
            self.url = check_download_url(
                urljoin(self.url, location), self.policy.allowed_hosts, via="redirect"
            )
            return self.url
        self.status = status
        declared = headers.get("Content-Length")
        if status < 400 and declared and declared.strip().isdigit() and int(declared) > self.policy.max_bytes:
            raise self._too_large(f"it declares {int(declared)} bytes")
        encoding = (headers.get("Content-Encoding") or "identity").strip().lower()
        if status < 400 and encoding != "identity":
            raise DoitongBadImage(f"Doitong {WHAT}: the body is {encoding}-encoded, not a plain image")
        return None

    def _too_large(self, detail: str) -> DoitongDownloadTooLarge:
        return DoitongDownloadTooLarge(
            f"Doitong {WHAT}: the body is larger than {self.policy.max_bytes} bytes ({detail}); reading "
            f"stopped. Raise the connection extra {MAX_BYTES_EXTRA!r} if such outputs are expected"
        )

    def feed(self, chunk: bytes) -> bool:
        """Take the next piece of the body; ``False`` when no more should be read.

        :raises DoitongDownloadTooLarge: past the byte cap (nothing more is read).
        :raises DoitongDownloadTimeout: past the time limit.
        """
        if self.status >= 400:
            room = MAX_ERROR_BODY_BYTES - len(self._body)
            self._body += chunk[: max(0, room)]
            return len(self._body) < MAX_ERROR_BODY_BYTES
        if len(self._body) + len(chunk) > self.policy.max_bytes:
            raise self._too_large(f"{len(self._body) + len(chunk)} bytes came and more were coming")
        self._body += chunk
        self.remaining()
        return True

    def result(self) -> bytes:
        """The image's bytes, once the body ended.

        :raises DoitongError: the classified error of a 4xx/5xx answer.
        :raises DoitongBadImage: for a body that is not a whole PNG, JPEG or WebP image.
        """
        if self.status >= 400:
            error = classify(status=self.status, body=decode_body(bytes(self._body)), what=WHAT)
            raise error or DoitongProtocolError(f"Doitong {WHAT}: HTTP {self.status}", status=self.status)
        if self.status >= 300 or self.status < 200:
            raise DoitongProtocolError(f"Doitong {WHAT}: unexpected HTTP {self.status}", status=self.status)
        data = bytes(self._body)
        self._body = bytearray()
        check_image(data, what=WHAT)
        return data
