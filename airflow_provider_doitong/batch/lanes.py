"""Requests in flight: bounded pools of threads, each thread sending over an HTTP session of its own.

A batch's time is the plan's (job slots, requests per window, job durations) only if the client's
own waits hide inside it: a submission's round trip, a download, a write and its fsync. The runner
keeps several of them in flight on the :class:`Lanes`' pools, while its loop (the only thread that
touches the ledger and the planner) goes on deciding.

Threads, not the async client: the batch runs in a worker's synchronous task with the synchronous
client the hook gives (the triggerer's event loop is not there to borrow), its steps are a few dozen
blocking calls at a time, and a thread per request in flight keeps the client's one code path,
retries and checks for both operators. A ``requests.Session`` is not documented as safe to share
between threads (every request reads and writes its cookie jar, and its pool keeps 10 connections
a host), so each thread has a session of its own, kept for the thread's life (its connections are
reused); each task runs on a shallow copy of the runner's client bound to that session, made when
the task starts, so it carries the client's settings, observer and current key (a rotated one), and
the rate-limit headers of its own answer, which the task hands back with its result.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import requests

from airflow_provider_doitong.client import DoitongClient

#: Submissions in flight at once (and so the largest group one ledger flush covers): with a 100 ms
#: round trip, some 300 a second, more than the largest plan's requests per window allow.
SUBMISSIONS_IN_FLIGHT = 32
#: Downloads and writes of finished images in flight at once.
DOWNLOADS_IN_FLIGHT = 16

T = TypeVar("T")


class Lanes:
    """The submission and download pools of one batch run, on copies of ``client``.

    :param client: the runner's client (its key, settings and observer are the copies').
    :param submissions: threads sending submissions.
    :param downloads: threads downloading and writing images.
    """

    def __init__(
        self,
        client: DoitongClient,
        *,
        submissions: int = SUBMISSIONS_IN_FLIGHT,
        downloads: int = DOWNLOADS_IN_FLIGHT,
    ) -> None:
        self.client = client
        self.submissions = submissions
        self.downloads = downloads
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._submit_pool: ThreadPoolExecutor | None = None
        self._download_pool: ThreadPoolExecutor | None = None

    def _lane_client(self) -> DoitongClient:
        """A copy of the runner's client sending over this thread's own session."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        lane = copy.copy(self.client)
        lane._session = session  # the copy's own connections; every other setting is the client's
        lane.last_rate_limit = None
        return lane

    def _run(self, task: Callable[[DoitongClient], T]) -> T:
        return task(self._lane_client())

    def submit(self, task: Callable[[DoitongClient], T]) -> Future[T]:
        """Run ``task`` on a submission thread, with a client of its own."""
        if self._submit_pool is None:
            self._submit_pool = ThreadPoolExecutor(self.submissions, thread_name_prefix="doitong-submit")
        return self._submit_pool.submit(self._run, task)

    def download(self, task: Callable[[DoitongClient], T]) -> Future[T]:
        """Run ``task`` on a download thread, with a client of its own."""
        if self._download_pool is None:
            self._download_pool = ThreadPoolExecutor(self.downloads, thread_name_prefix="doitong-download")
        return self._download_pool.submit(self._run, task)

    def close(self) -> None:
        """Wait for the tasks in flight (queued ones are dropped) and close every thread's session."""
        for pool in (self._submit_pool, self._download_pool):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._submit_pool = self._download_pool = None
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
        self._local = threading.local()
