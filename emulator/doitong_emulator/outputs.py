"""Job outputs: their URLs and the download endpoint, honest or hostile as the faults say.

The hostile options (``FaultConfig.hostile_job_ids``, ``output_base_url``, ``output_suffix``,
``output_format``, ``download_body``, ``download_redirects``...) make the emulator answer like a
compromised or broken service, so tests can show that clients treat its answers as data.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from airflow_provider_doitong.client.contract import OUTPUT_PATH, ErrorCode
from doitong_emulator.errors import ApiError
from doitong_emulator.hostile_values import two_way_base_url
from doitong_emulator.images import FORMATS, MEDIA_TYPES, render_image

if TYPE_CHECKING:
    from doitong_emulator.faults import FaultConfig
    from doitong_emulator.state import EmulatorState

#: What ``download_body`` may be.
BODIES = ("image", "html", "json", "empty", "truncated", "endless", "drip")
#: Hostile job ids: a path out of any folder, then a unique part.
HOSTILE_ID_PREFIX = "../../escape_"
DEFAULT_SUFFIX = ".jpg"
#: The longest chain of redirects the emulator is asked for.
MAX_REDIRECTS = 50
#: Endless bodies are sent in pieces of this size.
ENDLESS_CHUNK = b"\x00" * (64 * 1024)
#: A drip body sends one byte per this many seconds.
DRIP_SECONDS = 0.05
HTML_PAGE = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1>Please try again later.</body></html>"
JSON_PAGE = b'{"error": "output not ready", "retry": true}'


def check_hostile_options(config: FaultConfig) -> None:
    """Refuse hostile options that cannot work.

    :raises ValueError: naming the option.
    """
    if config.output_format not in FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(FORMATS)}, got {config.output_format!r}")
    if config.download_body not in BODIES:
        raise ValueError(f"download_body must be one of {', '.join(BODIES)}, got {config.download_body!r}")
    if config.download_faults < 0:
        raise ValueError("download_faults must not be negative")
    if not 0 <= config.download_redirects <= MAX_REDIRECTS:
        raise ValueError(f"download_redirects must be between 0 and {MAX_REDIRECTS}")
    for name in ("output_base_url", "redirect_base_url"):
        value = getattr(config, name)
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{name} must be an http(s) base URL, got {value!r}")
    if config.output_suffix is not None and ("/" in config.output_suffix or "?" in config.output_suffix):
        raise ValueError("output_suffix must not hold '/' or '?'")


def new_job_id(config: FaultConfig) -> str:
    """A new job's id: 20 hex digits, or with ``hostile_job_ids`` a path that climbs out of folders."""
    token = uuid.uuid4().hex[:20]
    return HOSTILE_ID_PREFIX + token[:12] if config.hostile_job_ids else token


def output_url(job_id: str, *, base_url: str, config: FaultConfig) -> str:
    """Where a job's output is served, as the API shows it (the id quoted whole: it is data)."""
    if config.two_way_output_host:
        base_url = two_way_base_url(config.two_way_output_host)
    base = (config.output_base_url or base_url).rstrip("/")
    path = OUTPUT_PATH.format(job_id=quote(job_id, safe=""))
    return base + path.removesuffix(DEFAULT_SUFFIX) + (config.output_suffix or DEFAULT_SUFFIX)


class DownloadLedger:
    """Counts downloads since the fault configuration last changed, and bytes of endless bodies sent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config: object = None
        self._served = 0
        self.stream_bytes = 0

    def next_body(self, config: FaultConfig) -> str:
        """The body kind of the next download: ``download_body`` for the first ``download_faults``."""
        with self._lock:
            if config is not self._config:
                self._config, self._served = config, 0
            self._served += 1
            if config.download_faults and self._served > config.download_faults:
                return "image"
            return config.download_body

    def sent(self, count: int) -> None:
        with self._lock:
            self.stream_bytes += count

    def reset(self) -> None:
        with self._lock:
            self._config, self._served, self.stream_bytes = None, 0, 0


def _job_id_of(name: str) -> str:
    """The job id in an output file name: everything before the last suffix."""
    last = name.rsplit("/", 1)[-1]
    return name[: name.rfind(".")] if "." in last.lstrip(".") else name


async def _endless(head: bytes, ledger: DownloadLedger, *, drip: bool) -> AsyncIterator[bytes]:
    yield head
    ledger.sent(len(head))
    while True:
        if drip:
            await asyncio.sleep(DRIP_SECONDS)
            chunk = b"\x00"
        else:
            await asyncio.sleep(0)
            chunk = ENDLESS_CHUNK
        yield chunk
        ledger.sent(len(chunk))


def _body(kind: str, image: bytes, media_type: str, ledger: DownloadLedger) -> Response:
    headers = {"Cache-Control": "no-store"}
    if kind == "html":
        return Response(HTML_PAGE, media_type="text/html", headers=headers)
    if kind == "json":
        return Response(JSON_PAGE, media_type="application/json", headers=headers)
    if kind == "empty":
        return Response(b"", media_type=media_type, headers=headers)
    if kind == "truncated":
        return Response(image[: len(image) // 2], media_type=media_type, headers=headers)
    if kind in ("endless", "drip"):
        stream = _endless(image[:64], ledger, drip=kind == "drip")
        return StreamingResponse(stream, media_type=media_type, headers=headers)
    return Response(image, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator


async def output_endpoint(request: Request) -> Response:
    """``GET /outputs/{job_id}.jpg``, without auth: a completed job's image, else 404.

    With hostile options: first ``download_redirects`` redirects (``?hop=N``), then the configured
    body, in the configured format, whatever the URL's suffix.
    """
    state = _state(request)
    config = state.faults.config
    name: str = request.path_params["name"]
    try:
        hop = int(request.query_params.get("hop") or 0)
    except ValueError:
        hop = 0
    if hop < config.download_redirects:
        base = (config.redirect_base_url or state.base_url).rstrip("/")
        location = f"{base}/outputs/{quote(name, safe='')}?hop={hop + 1}"
        return Response(status_code=302, headers={"Location": location})
    job = state.output_job(_job_id_of(name))
    if job is None:
        error = ApiError(ErrorCode.NOT_FOUND, f"No output {name!r}: unknown, not completed or expired")
        return JSONResponse(error.body(), status_code=error.status)
    fmt = config.output_format
    image = await asyncio.to_thread(render_image, job.id, job.prompt, job.width, job.height, fmt)
    return _body(state.downloads.next_body(config), image, MEDIA_TYPES[fmt], state.downloads)


def ledger_snapshot(ledger: DownloadLedger) -> dict[str, Any]:
    """The download counters shown in ``GET /_emulator/stats``."""
    return {"stream_bytes_sent": ledger.stream_bytes}
