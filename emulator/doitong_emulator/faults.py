"""Injected faults: errors, dropped connections, latency, failed and stuck jobs, an outage window and
stale rate-limit headers."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from doitong_emulator.hostile_values import check_value_options
from doitong_emulator.jobs import OUTCOME_COMPLETED, OUTCOME_FAILED, OUTCOME_STUCK
from doitong_emulator.outputs import check_hostile_options

log = logging.getLogger(__name__)

#: Request faults :meth:`FaultInjector.draw_request` can return.
FAULT_DROP = "drop"
FAULT_500 = "error_500"
FAULT_429 = "error_429"
FAULT_503 = "error_503"


@dataclass(frozen=True, kw_only=True)
class FaultConfig:
    """What goes wrong, and how often. Faults apply to API endpoints only.

    Each API request draws one number: below ``drop_rate`` its connection is closed without an
    answer, in the next ``error_500_rate`` it gets a 500, in the next ``error_429_rate`` a 429
    ``RATE_LIMITED``. Each new job draws once more: in ``fail_job_rate`` it fails (and is
    refunded), in the next ``stuck_job_rate`` it never finishes.

    :param error_500_rate: share of API requests answered 500 ``INTERNAL_SERVER_ERROR``.
    :param error_429_rate: share answered 429 ``RATE_LIMITED`` (with rate-limit headers).
    :param drop_rate: share whose TCP connection is closed without any answer.
    :param latency_s: seconds added to every API request.
    :param fail_job_rate: share of new jobs that end ``failed``.
    :param stuck_job_rate: share of new jobs that stay ``processing`` forever.
    :param outage_s: the length, in real seconds, of an outage during which every API request is
        answered 503 or dropped (0: no outage); downloads are not affected.
    :param outage_after_s: real seconds from this configuration to the start of the outage.
    :param outage_drop_rate: share of requests during the outage whose connection is dropped
        instead of answered 503.
    :param stale_reset_s: every 429 carries an ``X-RateLimit-Reset`` this many seconds in the past
        and no ``Retry-After`` (a stale header, or a server clock behind the client's); 0: off.
    :param seed: seeds the draws, for reproducible runs.

    Hostile answers (each off by default; they test that clients treat answers as data):

    :param hostile_job_ids: new jobs get ids that are not file names (``../../escape_<hex>``).
    :param output_base_url: output URLs point at this base URL (another host) instead of the emulator.
    :param output_suffix: output URLs end with this instead of ``.jpg`` (e.g. ``.py``).
    :param output_format: the image downloads serve: ``jpeg``, ``png`` or ``webp``, whatever the URL says.
    :param download_body: what downloads answer with status 200: ``image``, ``html``, ``json``,
        ``empty``, ``truncated`` (half an image), ``endless`` (an image header, then bytes forever)
        or ``drip`` (an image header, then a byte every 50 ms forever).
    :param download_faults: only the first N downloads after this configuration get
        ``download_body``; later ones get the image (0: every download).
    :param download_redirects: each download is redirected this many times before its body.
    :param redirect_base_url: where those redirects point (default: the emulator itself).

    Pricing (off by default):

    :param charge_factor: each new job is charged the contract's price times this, rounded up (and
        reports it as its ``creditCost``): above 1 the vendor charges more than any estimate.

    Hostile values (each off by default; see :mod:`doitong_emulator.hostile_values`):

    :param time_headers: ``plain``; ``epoch_ms``: ``X-RateLimit-Reset`` and ``Retry-After`` as Unix
        times in milliseconds; ``absurd``: a reset in the year 33658 and a ``Retry-After`` of 1e300 s.
    :param credit_cost_as: ``int``; ``string`` (``"10"``) or ``negative`` (``-10``).
    :param huge_answer_mib: status answers are 200s of this many MiB, streamed (0: off).
    :param two_way_output_host: output URLs on ``https://<host>\\.cdn.doitong.com``, which
        ``urllib.parse`` reads as a subdomain of ``cdn.doitong.com`` and HTTP libraries connect to
        ``<host>``.
    :param hold_slot_s: another client holds one job slot of every account for this many real
        seconds from the first submission after this configuration (submissions over the
        concurrency limit get 429).
    """

    error_500_rate: float = 0.0
    error_429_rate: float = 0.0
    drop_rate: float = 0.0
    latency_s: float = 0.0
    fail_job_rate: float = 0.0
    stuck_job_rate: float = 0.0
    outage_s: float = 0.0
    outage_after_s: float = 0.0
    outage_drop_rate: float = 0.0
    stale_reset_s: float = 0.0
    seed: int | None = None
    # --- hostile answers ---
    hostile_job_ids: bool = False
    output_base_url: str | None = None
    output_suffix: str | None = None
    output_format: str = "jpeg"
    download_body: str = "image"
    download_faults: int = 0
    download_redirects: int = 0
    redirect_base_url: str | None = None
    # --- pricing ---
    charge_factor: float = 1.0
    # --- hostile values ---
    time_headers: str = "plain"
    credit_cost_as: str = "int"
    huge_answer_mib: int = 0
    two_way_output_host: str | None = None
    hold_slot_s: float = 0.0

    def __post_init__(self) -> None:
        if min(self.outage_s, self.outage_after_s, self.stale_reset_s) < 0:
            raise ValueError("outage_s, outage_after_s and stale_reset_s must not be negative")
        if not 0.0 <= self.outage_drop_rate <= 1.0:
            raise ValueError(f"outage_drop_rate must be between 0 and 1, got {self.outage_drop_rate}")
        for name in ("error_500_rate", "error_429_rate", "drop_rate", "fail_job_rate", "stuck_job_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.error_500_rate + self.error_429_rate + self.drop_rate > 1.0 + 1e-9:
            raise ValueError("error_500_rate + error_429_rate + drop_rate must not exceed 1")
        if self.fail_job_rate + self.stuck_job_rate > 1.0 + 1e-9:
            raise ValueError("fail_job_rate + stuck_job_rate must not exceed 1")
        if self.latency_s < 0:
            raise ValueError("latency_s must not be negative")
        if not self.charge_factor > 0:
            raise ValueError(f"charge_factor must be positive, got {self.charge_factor}")
        check_hostile_options(self)
        check_value_options(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        """Build from a JSON object; unknown keys are refused.

        :param data: the fields, as in :meth:`to_dict`.
        :raises ValueError: for an unknown key or a bad value.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fault option(s): {', '.join(unknown)}")
        kinds = {f.name: str(f.type) for f in fields(cls)}
        return cls(**{key: _cast(kinds[key], value) for key, value in data.items()})

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a JSON-ready dict."""
        return asdict(self)


def _cast(kind: str, value: Any) -> Any:
    """A JSON value as the field's declared type (``float``, ``int | None``, ``bool``, ``str``...)."""
    if value is None and "None" in kind:
        return None
    if kind.startswith("bool"):
        return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
    if kind.startswith("str"):
        return str(value)
    if kind.startswith("int"):
        return int(value)
    return float(value)


class FaultInjector:
    """Draws faults from a seeded generator; thread-safe.

    :param config: the fault configuration.
    """

    def __init__(self, *, config: FaultConfig | None = None, clock: Any = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.config = config or FaultConfig()
        self._rng = random.Random(self.config.seed)
        self.configured_at = clock()
        self._hold_from: float | None = None

    def configure(self, config: FaultConfig) -> None:
        """Switch to a new configuration and re-seed; an outage window counts from now.

        :param config: the new configuration.
        """
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)
            self.configured_at = self._clock()
            self._hold_from = None

    def outage_fault(self) -> str | None:
        """During the outage window, :data:`FAULT_503` or :data:`FAULT_DROP` for an API request; else ``None``."""
        config = self.config
        if config.outage_s <= 0:
            return None
        start = self.configured_at + config.outage_after_s
        if not start <= self._clock() < start + config.outage_s:
            return None
        if config.outage_drop_rate <= 0:
            return FAULT_503
        with self._lock:
            draw = self._rng.random()
        return FAULT_DROP if draw < config.outage_drop_rate else FAULT_503

    def slots_held(self, now: float) -> tuple[int, float]:
        """The job slots another client holds at ``now``, and for how many more real seconds.

        The hold (``hold_slot_s``) starts at the first submission after this configuration, so it
        is met whatever time passed before it.
        """
        if self.config.hold_slot_s <= 0:
            return 0, 0.0
        with self._lock:
            if self._hold_from is None:
                self._hold_from = now
            left = self._hold_from + self.config.hold_slot_s - now
        return (1, left) if left > 0 else (0, 0.0)

    def reseed(self) -> None:
        """Restart the draws from the configured seed."""
        self.configure(self.config)

    def draw_request(self) -> str | None:
        """The fault for one API request: :data:`FAULT_DROP`, :data:`FAULT_500`, :data:`FAULT_429` or ``None``."""
        config = self.config
        if not (config.drop_rate or config.error_500_rate or config.error_429_rate):
            return None
        with self._lock:
            draw = self._rng.random()
        if draw < config.drop_rate:
            return FAULT_DROP
        if draw < config.drop_rate + config.error_500_rate:
            return FAULT_500
        if draw < config.drop_rate + config.error_500_rate + config.error_429_rate:
            return FAULT_429
        return None

    def draw_job_outcome(self) -> str:
        """The outcome of a new job: completed, failed or stuck."""
        config = self.config
        if not (config.fail_job_rate or config.stuck_job_rate):
            return OUTCOME_COMPLETED
        with self._lock:
            draw = self._rng.random()
        if draw < config.fail_job_rate:
            return OUTCOME_FAILED
        if draw < config.fail_job_rate + config.stuck_job_rate:
            return OUTCOME_STUCK
        return OUTCOME_COMPLETED


def _find_transport(*callables: Any) -> Any:
    for func in callables:
        owner = getattr(func, "__self__", None)
        transport = getattr(owner, "transport", None)
        if transport is not None:
            return owner, transport
    return None, None


async def drop_connection(receive: Any, send: Any) -> bool:
    """Close the client's TCP connection at once, without any HTTP answer.

    Under uvicorn, ``receive`` and ``send`` are bound methods of the connection's request cycle,
    which holds the transport. The socket is set to linger zero so the close is a reset, the
    transport is aborted, and the cycle is marked disconnected so the server sends nothing more.

    :param receive: the raw ASGI ``receive`` of the server.
    :param send: the raw ASGI ``send`` of the server.
    :return: ``True`` if the connection was dropped, ``False`` if no transport could be found.
    """
    cycle, transport = _find_transport(send, receive)
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, AttributeError, TypeError):
            log.debug("Could not set SO_LINGER before dropping a connection")
    if hasattr(cycle, "disconnected"):
        cycle.disconnected = True
    transport.abort()
    await asyncio.sleep(0)
    return True
