"""The content-addressed image cache: an entry per request, verified when read, claimed before it is made.

A cache is a folder (local, or any ``ObjectStoragePath`` such as ``s3://bucket/prefix``) shared by
any number of tasks, DAGs and deployments. Its entries are keyed by :func:`cache_key`, the
fingerprint of what makes the image (model, prompt, size, quality, version), so a request with
the same key gets the same image: the API takes no seed, and the cache's point is that an image
once paid for is *the* image for its request. For a key ``k`` the folder ``<k[:2]>/`` holds:

- ``k.image``: the image's bytes, written first (atomically);
- ``k.json``: the entry's record (written last, so a record names a whole image): the key, the
  image's SHA-256 and size, the job that made it, its model and the Unix time it was stored;
- ``k.claim``: while a task makes the image, its claim (an exclusive create: a hard link locally,
  ``If-None-Match: *`` on S3, see :mod:`.places`); a stale claim (:data:`CLAIM_TTL_S`) is taken
  over once, by whoever first creates ``k.takeover-<digest of the stale claim>``.

The cache is untrusted storage: a record is read up to :data:`MAX_RECORD_BYTES` and every value
checked; the image is read up to its recorded size (and :data:`MAX_IMAGE_BYTES`), its SHA-256 and
its kind checked. A corrupt, truncated, foreign (its record names another key), too old or
symlinked entry is a miss, never a wrong image. Nothing here imports Airflow but its
``ObjectStoragePath``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from airflow_provider_doitong.client.downloads import DEFAULT_MAX_DOWNLOAD_BYTES
from airflow_provider_doitong.client.errors import DoitongError
from airflow_provider_doitong.client.fingerprint import fingerprint
from airflow_provider_doitong.client.images import check_image
from airflow_provider_doitong.client.models import ImageRequest
from airflow_provider_doitong.client.safety import safe_component
from airflow_provider_doitong.storage.paths import Location, ObjectStoragePath, UnsafeOutputPath
from airflow_provider_doitong.storage.places import Place

log = logging.getLogger(__name__)

FORMAT = "doitong-cache-entry"
CLAIM_FORMAT = "doitong-cache-claim"
VERSION = 1
#: The largest entry record read; a larger one is not a record (a miss).
MAX_RECORD_BYTES = 4096
#: The largest cached image read: the largest download the client accepts by default.
MAX_IMAGE_BYTES = DEFAULT_MAX_DOWNLOAD_BYTES
#: Seconds after which another task's claim is stale (its owner died) and is taken over.
CLAIM_TTL_S = 900.0
#: Seconds between two looks at a key another task is making.
WAIT_POLL_S = 0.5
#: How far ahead of this clock an entry's time may be (clock skew between machines).
MAX_SKEW_S = 300.0

_HEX64 = re.compile(r"[0-9a-f]{64}")


def cache_key(request: ImageRequest) -> str:
    """The entry key of a request: :func:`~airflow_provider_doitong.client.fingerprint.fingerprint`
    of what makes the image (model, prompt as trimmed, width, height, quality, version; a request
    checked against the contract spells its version out). The webhook URL, the output path and the
    task are left out: they change where the image goes, not what it is."""
    return fingerprint(request)


@dataclass(frozen=True)
class CacheEntry:
    """A verified entry: the image and the record of the job that made it.

    :param credits: what that job was charged (nothing is charged for a hit).
    """

    key: str
    data: bytes
    sha256: str
    job_id: str
    model: str
    created_at: float
    credits: int | None = None


class CacheEntryInvalid(ValueError):
    """An entry's record or image that is not what the key needs; read as a miss."""


class Taken(NamedTuple):
    """What :meth:`ImageCache.take` found: a hit, or whether the caller now holds the claim
    (neither: another task is making the image)."""

    entry: CacheEntry | None
    claimed: bool


def _count(value: Any, what: str, *, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
        raise CacheEntryInvalid(f"{what}={value!r} is out of bounds")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256 or not value.isprintable():
        raise CacheEntryInvalid(f"{what} is not printable text of at most 256 characters")
    return value


def parse_record(raw: bytes, *, key: str, model: str) -> dict[str, Any]:
    """An entry's record, every value checked: it must be the record of ``key`` for ``model``.

    :raises CacheEntryInvalid: for anything else (too large, not JSON, a foreign key, a bad value).
    """
    if len(raw) > MAX_RECORD_BYTES:
        raise CacheEntryInvalid(f"the record is over {MAX_RECORD_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise CacheEntryInvalid("the record is not JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise CacheEntryInvalid(f"not a version-{VERSION} cache record")
    if doc.get("key") != key:
        raise CacheEntryInvalid("the record is another key's")
    if doc.get("model") != model:
        raise CacheEntryInvalid("the record is another model's")
    sha256 = doc.get("sha256")
    if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
        raise CacheEntryInvalid("sha256 is not 64 hex digits")
    created = doc.get("created_at")
    if isinstance(created, bool) or not isinstance(created, (int, float)) or not math.isfinite(created):
        raise CacheEntryInvalid("created_at is not a time")
    credits = doc.get("credits")
    return {
        "sha256": sha256,
        "bytes": _count(doc.get("bytes"), "bytes", top=MAX_IMAGE_BYTES),
        "job_id": _text(doc.get("job_id"), "job_id"),
        "model": model,
        "created_at": float(created),
        "credits": None if credits is None else _count(credits, "credits", top=10**12),
    }


def verify_image(data: bytes, record: dict[str, Any]) -> None:
    """:raises CacheEntryInvalid: unless ``data`` is the whole image the record describes."""
    if len(data) != record["bytes"]:
        raise CacheEntryInvalid(f"the image has {len(data)} bytes, its record says {record['bytes']}")
    if hashlib.sha256(data).hexdigest() != record["sha256"]:
        raise CacheEntryInvalid("the image's SHA-256 is not its record's")
    try:
        check_image(data, what="cached image")
    except DoitongError as exc:
        raise CacheEntryInvalid(str(exc)) from None


def make_record(
    key: str, *, data: bytes, job_id: str, model: str, created_at: float, credits: int | None
) -> bytes:
    """The record written beside an image (see :func:`parse_record`)."""
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "key": key,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "job_id": job_id,
        "model": model,
        "created_at": created_at,
        "credits": credits,
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


class ImageCache:
    """One cache folder, as a task reads and fills it.

    :param location: the cache's folder: a local path, a URI or an ``ObjectStoragePath``.
    :param max_age: seconds after which an entry is a miss (``None``: entries never age).
    :param refresh: ignore the entries there are and make new ones: only an entry stored after this
        object was made is a hit (so a task waiting for another's refresh gets the new image).
    :param claim_ttl: seconds after which another task's claim is stale and taken over.
    """

    def __init__(
        self,
        location: str | ObjectStoragePath | Location,
        *,
        max_age: float | None = None,
        refresh: bool = False,
        claim_ttl: float = CLAIM_TTL_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.location = Location.of(location)
        self.root = Place(self.location.path)
        self.max_age = max_age
        self.refresh = refresh
        self.claim_ttl = claim_ttl
        self.clock = clock
        self.sleep = sleep
        self.started = clock()

    @property
    def shown(self) -> str:
        """The cache's folder as users write it."""
        return self.location.shown

    def _place(self, key: str) -> Place:
        if not _HEX64.fullmatch(key):
            raise ValueError(f"{key!r} is not a cache key")
        return self.root.child(safe_component(key[:2]))

    def _oldest(self) -> float | None:
        floors = [self.clock() - self.max_age] if self.max_age is not None else []
        if self.refresh:
            floors.append(self.started)
        return max(floors) if floors else None

    # --- reading ----------------------------------------------------------------------------
    def lookup(self, request: ImageRequest) -> CacheEntry | None:
        """The verified entry of ``request``, or ``None`` (a miss: absent, too old, or not sound)."""
        key = cache_key(request)
        place = self._place(key)
        try:
            raw = _read_bounded(place, f"{key}.json", MAX_RECORD_BYTES)
            if raw is None:
                return None
            record = parse_record(raw, key=key, model=request.provider)
            oldest = self._oldest()
            created = record["created_at"]
            if created > self.clock() + MAX_SKEW_S or (oldest is not None and created < oldest):
                return None
            data = _read_bounded(place, f"{key}.image", record["bytes"])
            if data is None:
                raise CacheEntryInvalid("its image is missing")
            verify_image(data, record)
        except (CacheEntryInvalid, UnsafeOutputPath, OSError) as exc:
            log.warning("The cache entry %s is not used (a miss): %s", place.shown(f"{key}.json"), exc)
            return None
        return CacheEntry(
            key=key,
            data=data,
            sha256=record["sha256"],
            job_id=record["job_id"],
            model=record["model"],
            created_at=record["created_at"],
            credits=record["credits"],
        )

    # --- filling ----------------------------------------------------------------------------
    def fill(self, request: ImageRequest, *, data: bytes, job_id: str, credits: int | None) -> bool:
        """Store ``data`` as the entry of ``request`` (the image, then its record); never raises for
        the storage (a task's image is stored already: a cache that cannot be written is logged).

        :return: whether the entry was written.
        """
        key = cache_key(request)
        place = self._place(key)
        record = make_record(
            key, data=data, job_id=job_id, model=request.provider, created_at=self.clock(), credits=credits
        )
        try:
            place.write(f"{key}.image", data)
            place.write(f"{key}.json", record)
        except (OSError, UnsafeOutputPath) as exc:
            log.warning("Could not write the cache entry %s: %s", place.shown(f"{key}.json"), exc)
            return False
        return True

    # --- claims -----------------------------------------------------------------------------
    def take(self, request: ImageRequest, owner: str) -> Taken:
        """The entry of ``request`` (a hit), else the key's claim for ``owner`` if it can have it.

        A miss is looked up again once claimed: the task that made the image may have filled
        it and released its claim between the first look and the claim, and that image is
        then a hit (the claim is given back), never a second job.
        """
        entry = self.lookup(request)
        if entry is not None:
            return Taken(entry, claimed=False)
        if not self.claim(request, owner):
            return Taken(None, claimed=False)
        entry = self.lookup(request)
        if entry is not None:
            self.release(request, owner)
            return Taken(entry, claimed=False)
        return Taken(None, claimed=True)

    def claim(self, request: ImageRequest, owner: str) -> bool:
        """Claim the key of ``request`` for ``owner`` before making its image.

        :param owner: who claims (a task instance, the same across its tries and deferrals).
        :return: whether ``owner`` holds the claim (made now, or earlier by ``owner``); ``False``
            while another owner's fresh claim is there.
        """
        key = cache_key(request)
        place = self._place(key)
        name = f"{key}.claim"
        doc = {"format": CLAIM_FORMAT, "owner": owner, "claimed_at": self.clock()}
        body = json.dumps(doc).encode("utf-8")
        try:
            if place.create(name, body):
                return True
            found = _read_bounded(place, name, MAX_RECORD_BYTES)
            if found is None:  # released meanwhile: try once more
                return place.create(name, body)
            holder, claimed_at = _claim_of(found)
            if holder == owner:
                return True
            if claimed_at is not None and self.clock() - claimed_at < self.claim_ttl:
                return False
            # stale or unreadable: one taker, by an exclusive marker named after what it replaces
            marker = f"{key}.takeover-{hashlib.sha256(found).hexdigest()[:16]}"
            if not place.create(marker, body):
                return False
            log.warning("Taking over the stale cache claim %s (%s)", place.shown(name), found[:200])
            place.remove(name)
            return place.create(name, body)
        except (OSError, UnsafeOutputPath) as exc:
            log.warning("Cannot claim %s (%s); making the image without a claim", place.shown(name), exc)
            return True

    def release(self, request: ImageRequest, owner: str) -> None:
        """Remove ``owner``'s claim on the key of ``request`` (another's is left)."""
        key = cache_key(request)
        place = self._place(key)
        try:
            found = _read_bounded(place, f"{key}.claim", MAX_RECORD_BYTES)
            if found is not None and _claim_of(found)[0] == owner:
                place.remove(f"{key}.claim")
        except (OSError, UnsafeOutputPath, CacheEntryInvalid) as exc:  # never over a task's own error
            log.warning("Cannot release the cache claim of %s: %s", key, exc)

    def wait(self, request: ImageRequest, owner: str, *, deadline: float | None) -> CacheEntry | None:
        """Wait while another task makes the image of ``request``: its entry, or ``None`` once
        ``owner`` holds the claim (the other task gave up, or its claim went stale) or at
        ``deadline`` (then the caller makes the image itself).
        """
        while True:
            taken = self.take(request, owner)
            if taken.entry is not None:
                return taken.entry
            if taken.claimed:
                return None
            if deadline is not None and self.clock() + WAIT_POLL_S >= deadline:
                log.warning(
                    "Stopped waiting for another task's image of %s: the deadline", cache_key(request)
                )
                return None
            self.sleep(WAIT_POLL_S)


def _claim_of(raw: bytes) -> tuple[str | None, float | None]:
    """A claim's owner and time, ``(None, None)`` for one that cannot be read."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None, None
    if not isinstance(doc, dict) or doc.get("format") != CLAIM_FORMAT:
        return None, None
    owner, at = doc.get("owner"), doc.get("claimed_at")
    if not isinstance(owner, str) or isinstance(at, bool) or not isinstance(at, (int, float)):
        return None, None
    return owner, float(at) if math.isfinite(at) else None


def _read_bounded(place: Place, name: str, limit: int) -> bytes | None:
    """The bytes of ``name`` (``None``: there is none), refused past ``limit`` bytes."""
    with place.open_read(name) as stream:
        if stream is None:
            return None
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise CacheEntryInvalid(f"{place.shown(name)} is over {limit} bytes")
    return bytes(data)
