"""The account's job slots, as the processes of one user on one host know them.

A batch paces itself by its own jobs and a single image's task knows only its own, so several DAGs
on one account send submissions into slots the others fill, and each refused submission is a
request of the account's window spent for nothing. On one host they need not: each client says which
of the account's jobs it knows to be running (accepted, or read still running, and not seen ended)
in a small file of its own beside the window's board (:mod:`~airflow_provider_doitong.client.board`),
and before a submission a client counts every file's jobs; while the plan's job slots are all
taken it holds the submission unsent (:class:`~airflow_provider_doitong.client.errors.DoitongRateLimited`,
``CONCURRENCY_LIMIT``, ``held``) until the first of them may have ended. A job seen ended by any
process (the worker that submitted it, the triggerer that watches it) is ended for all.

A claim and its count are made under a lock on the account's lock file, and each claim is written
before the lock is let go, so processes that submit at the same moment see each other's submissions
in flight. A job counts while it may still run: until its expected end (from when it was accepted, by the
typical duration of the jobs this host's processes saw complete), and at least a short lease after
it was last seen running, never more than :data:`MAX_LEASE_S` after. So a process that stopped
reading (ended, killed, deferred) holds slots for a short while only, and the API stays the judge:
a submission the board lets through may still be refused, and is waited for as before.

The files are untrusted as the window's board is: a folder or file that is not the user's own and
private, a symlink, anything but a regular file, a file over :data:`MAX_SLOTS_FILE_BYTES`, torn, of
another format, or any entry of the wrong type or an impossible time counts for nothing. Job ids are
kept as hashes (they are never paths); a file left by a process that is gone stops counting as its
jobs' leases run out, and is removed after :data:`ENDED_KEPT_S` (any file after :data:`STALE_FILE_S`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import secrets
import stat
import statistics
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from airflow_provider_doitong.client.board import (
    account_name,
    board_folder,
    read_private_file,
    write_private_file,
)
from airflow_provider_doitong.client.contract import JobStatus
from airflow_provider_doitong.client.models import Job, parse_api_time

#: A job counts at least this long after it was last seen running (seconds), and a submission in
#: flight this long after it was claimed.
MIN_LEASE_S = 2.0
#: ... or, once the host's typical duration is known, for this share of its age when last seen.
LEASE_FRACTION = 0.25
#: Before any duration is known, a job of a process that has ended (a task that deferred, one that
#: was killed) counts this long after it was last seen running (seconds), or for a quarter of its
#: age then; a running process's counts until it says the job ended.
ORPHAN_LEASE_S = 10.0
#: A job of the host's typical duration counts until this long after its expected end (seconds).
END_MARGIN_S = 1.0
#: A job never counts longer than this after it was last seen running (seconds).
MAX_LEASE_S = 600.0
#: The shortest hold, and the longest before any job duration is known (seconds); once one is, a
#: hold lasts until the first job may have ended, one typical duration at most.
MIN_HOLD_S, MAX_HOLD_S = 0.2, 2.0
#: How long a claim waits for the account's lock before it counts without it (seconds).
LOCK_WAIT_S = 0.5
#: A file untouched this long is removed by the next process that writes its own (seconds).
STALE_FILE_S = 3600.0
#: What one file may hold; the files read at most.
MAX_SLOTS_FILE_BYTES = 512 * 1024
MAX_ENTRIES, MAX_DURATIONS, MAX_FILES = 4096, 20, 128
#: How long a job seen ended is told to the others (seconds): longer than the leases it cancels.
#: A file of a process that has ended, or of a closed client, is removed once this old.
ENDED_KEPT_S = MAX_LEASE_S + 60.0
_FORMAT = 1
_KEY_CHARS = 16
_HEX = "0123456789abcdef"


def job_key(job_id: str) -> str:
    """A job's name in the files: a hash of its id, of fixed length."""
    return hashlib.sha256(job_id.encode()).hexdigest()[:_KEY_CHARS]


@dataclass
class _Known:
    """What one file says: running jobs (key: accepted, last seen running), ended jobs, durations,
    and when each submission in flight was claimed."""

    running: dict[str, tuple[float, float]] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    durations: list[float] = field(default_factory=list)
    in_flight: list[float] = field(default_factory=list)
    alive: bool = True


def _is_key(value: object) -> bool:
    return isinstance(value, str) and len(value) == _KEY_CHARS and not value.strip(_HEX)


def _time(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _recent(value: object, now: float, *, within: float) -> float | None:
    at = _time(value)
    return at if at is not None and now - within <= at <= now + 1.0 else None


def parse_slots_file(raw: bytes, now: float) -> _Known:
    """The jobs a file tells of; any entry of the wrong type or an impossible time is left out."""
    known = _Known()
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth
        return known
    if not isinstance(value, dict) or value.get("format") != _FORMAT:
        return known
    running, ended, durations = value.get("running"), value.get("ended"), value.get("durations")
    if isinstance(running, dict):
        for key, times in list(running.items())[:MAX_ENTRIES]:
            if not (_is_key(key) and isinstance(times, list) and len(times) == 2):
                continue
            accepted, seen = _time(times[0]), _recent(times[1], now, within=MAX_LEASE_S)
            if accepted is not None and seen is not None and accepted <= seen:
                known.running[key] = (accepted, seen)
    if isinstance(ended, list):
        known.ended = {k for k in ended[:MAX_ENTRIES] if _is_key(k)}
    if isinstance(durations, list):
        times = (_time(d) for d in durations[:MAX_DURATIONS])
        known.durations = [d for d in times if d is not None and 0.0 < d <= MAX_LEASE_S]
    known.alive = value.get("closed") is not True
    if isinstance(flying := value.get("in_flight"), list):
        claims = (_recent(t, now, within=MIN_LEASE_S) for t in flying[:MAX_ENTRIES])
        known.in_flight = [t for t in claims if t is not None]
    return known


def counts_until(accepted: float, seen: float, typical: float | None, *, alive: bool = True) -> float:
    """Until when a job accepted at ``accepted`` and last seen running at ``seen`` counts.

    :param typical: the host's typical job duration, once any job was seen to complete.
    :param alive: the process that tells of it still runs (it will read the job, and say when it ends).
    """
    if typical is not None:
        lease = max(MIN_LEASE_S, LEASE_FRACTION * (seen - accepted))
        until = max(seen + lease, accepted + typical + END_MARGIN_S)
    elif alive:
        until = seen + MAX_LEASE_S
    else:
        until = seen + max(ORPHAN_LEASE_S, LEASE_FRACTION * (seen - accepted))
    return min(until, seen + MAX_LEASE_S)


def _alive(name: str, prefix: str) -> bool:
    """Whether the process that wrote the file ``name`` (``<prefix><pid>-<token>.json``) still runs."""
    try:
        os.kill(int(name[len(prefix) :].split("-", 1)[0]), 0)
    except ProcessLookupError:
        return False
    except (ValueError, OverflowError, OSError):
        return True  # no pid to tell by, or one this user may not signal: assume it runs
    return True


@contextlib.contextmanager
def _host_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` among this host's processes, if it can be had on a private
    regular file of this user's (else none: the board is advice, and the API the judge)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError:
        yield
        return
    try:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077:
            _lock_within(fd, LOCK_WAIT_S)
        yield
    finally:
        os.close(fd)  # lets the lock go


def _lock_within(fd: int, wait_s: float) -> bool:
    """Take an exclusive ``flock`` on ``fd`` within ``wait_s`` (a process that hangs holding it, a
    file system without locks: then none)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        except OSError:
            return False


class SlotBoard:
    """One account's job slots on this host, as one client tells and reads them (thread-safe).

    :param folder: the boards' folder.
    :param account: the account's name (:func:`~airflow_provider_doitong.client.board.account_name`).
    :param concurrency: the plan's jobs at once.
    """

    def __init__(self, *, folder: Path, account: str, concurrency: int) -> None:
        self.folder = folder
        self.account = account
        self.concurrency = max(1, concurrency)
        self.path = folder / f"{account}.slots.{os.getpid()}-{secrets.token_hex(4)}.json"
        self._own = _Known()
        self._mine: set[str] = set()  # accepted by this client: no one else need be told they ended
        self._ended_at: dict[str, float] = {}
        self._durations: deque[float] = deque(maxlen=MAX_DURATIONS)
        self._lock = threading.Lock()
        self._read: dict[str, tuple[tuple[int, int, int], _Known]] = {}
        self._closed = False

    @classmethod
    def for_account(
        cls, *, base_url: str, api_key: str, concurrency: int, directory: Path | None = None
    ) -> SlotBoard | None:
        """The account's slots, or ``None`` when there is no private folder to keep them in."""
        folder = board_folder(directory)
        if folder is None:
            return None
        return cls(
            folder=folder, account=account_name(base_url=base_url, api_key=api_key), concurrency=concurrency
        )

    def claim(self, now: float) -> tuple[float, int] | None:
        """Take a slot for a submission about to be sent (``None``), or say until when to hold it and
        how many jobs this host knows running or submitting; :meth:`settle` gives the slot back."""
        with self._lock, _host_lock(self.folder / f"{self.account}.lock"):
            others = list(self._others(now))
            ends, flying, typical = self._counted(now, others)
            taken = len(ends) + flying
            if taken < self.concurrency:
                self._own.in_flight.append(now)
                self._write(now)
                return None
        over = taken - self.concurrency  # the jobs that must end before a slot is free, less one
        at = ends[over] if over < len(ends) else now + MIN_HOLD_S
        longest = MAX_HOLD_S if typical is None else max(MAX_HOLD_S, typical)
        return min(max(at, now + MIN_HOLD_S), now + longest), taken

    def settle(self, job: Job | None, now: float) -> None:
        """A claimed slot's submission is answered: ``job`` accepted, or nothing made."""
        with self._lock:
            if self._own.in_flight:
                self._own.in_flight.pop(0)
            if job is not None and not job.is_terminal:
                key = job_key(job.id)
                self._own.running[key] = (now, now)
                self._mine.add(key)
            self._write(now)

    def saw(self, jobs: Mapping[str, Job | None], now: float) -> None:
        """Jobs read: a running one counts on; an ended (or unknown) one is ended for every process."""
        with self._lock:
            for job_id, job in jobs.items():
                key = job_key(job_id)
                if job is None or job.is_terminal:
                    self._own.running.pop(key, None)
                    if key in self._mine:
                        self._mine.discard(key)
                    else:  # another process accepted it, and may still count it
                        self._ended_at.setdefault(key, now)
                    took = job.turnaround if job is not None and job.status is JobStatus.COMPLETED else None
                    if took is not None and 0 < took <= MAX_LEASE_S:
                        self._durations.append(took)
                else:
                    accepted = self._own.running.get(key, (None, now))[0]
                    if accepted is None:
                        started = parse_api_time(job.created_at)
                        accepted = min(started, now) if started is not None else now
                    self._own.running[key] = (accepted, now)
            self._write(now)

    def forget(self, job_ids: Iterable[str], now: float) -> None:
        """Jobs this client no longer watches (a wait given up): it no longer tells of them."""
        with self._lock:
            told = len(self._own.running)
            for job_id in job_ids:
                key = job_key(job_id)
                self._own.running.pop(key, None)
                self._mine.discard(key)
            if len(self._own.running) < told:  # a job seen ended was forgotten when it was seen
                self._write(now)

    def close(self, now: float) -> None:
        """The client is closed: what it told of counts as a departed process's would."""
        with self._lock:
            self._closed = True
            self._write(now)

    def _counted(self, now: float, others: Sequence[_Known]) -> tuple[list[float], int, float | None]:
        """When each job that counts stops counting (earliest first), the submissions in flight, and
        the host's typical job duration (``None`` when there is room whatever ends)."""
        # another's claim counts a short while (its answer may have been lost with its process)
        flying = len(self._own.in_flight) + sum(now - t <= MIN_LEASE_S for k in others for t in k.in_flight)
        if sum(len(k.running) for k in (self._own, *others)) + flying < self.concurrency:
            return [now] * sum(len(k.running) for k in (self._own, *others)), flying, None  # room
        ended = set(self._ended_at).union(*(k.ended for k in others))
        durations = [*self._durations, *(d for k in others for d in k.durations)]
        typical = statistics.median(durations) if durations else None
        until: dict[str, float] = {}
        for known in (self._own, *others):
            for key, (accepted, seen) in known.running.items():
                end = counts_until(accepted, seen, typical, alive=known.alive)
                if key not in ended and end > now:
                    until[key] = max(until.get(key, end), end)
        return sorted(until.values()), flying, typical

    def _others(self, now: float) -> Iterator[_Known]:
        """The other files of this account, each read again only when it changed."""
        prefix, found = f"{self.account}.slots.", 0
        try:
            entries = [
                e for e in os.scandir(self.folder) if e.name.startswith(prefix) and e.name.endswith(".json")
            ]
        except OSError:
            return
        self._read = {e.name: self._read[e.name] for e in entries if e.name in self._read}
        stats = []
        for entry in entries:
            with contextlib.suppress(OSError):
                stats.append((entry, entry.stat(follow_symlinks=False)))
        stats.sort(key=lambda pair: -pair[1].st_mtime)  # the newest first, if there are too many
        for entry, info in stats:
            if entry.path == str(self.path) or found >= MAX_FILES:
                continue
            cached = self._read.get(entry.name)
            gone = cached is not None and not cached[1].alive
            if now - info.st_mtime > (ENDED_KEPT_S if gone else STALE_FILE_S):  # nothing in it counts
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                continue
            found += 1
            stamp = (info.st_ino, info.st_ctime_ns, info.st_size)  # a chmod, a rewrite: read again
            if cached is None or cached[0] != stamp:
                raw = read_private_file(Path(entry.path), MAX_SLOTS_FILE_BYTES)
                cached = (stamp, parse_slots_file(raw, now) if raw is not None else _Known())
                self._read[entry.name] = cached
            known = cached[1]
            known.alive = known.alive and _alive(entry.name, prefix)
            yield known

    def _write(self, now: float) -> None:
        """Write this client's file (removed when it has nothing to tell)."""
        self._ended_at = {k: t for k, t in self._ended_at.items() if now - t <= ENDED_KEPT_S}
        own = self._own
        if not (own.running or self._ended_at or own.in_flight or self._durations):
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            return
        body = {
            "format": _FORMAT,
            "running": {k: [round(a, 3), round(s, 3)] for k, (a, s) in own.running.items()},
            "ended": list(self._ended_at)[-MAX_ENTRIES:],
            "durations": [round(d, 3) for d in self._durations],
            "in_flight": [round(t, 3) for t in own.in_flight],
            "closed": self._closed,
        }
        write_private_file(self.path, json.dumps(body, separators=(",", ":")).encode())
