"""Storing a batch's finished images: downloaded by the client (checked), written by ``storage``.

Each image is named by its item (``0007-a-fox-in-the-snow.jpg``: the item's number and prompt, the
extension from the image's own bytes), never by anything the API sent, and recorded ``stored`` in
the ledger with its SHA-256 once written. An output whose answer is final in
:mod:`~airflow_provider_doitong.client.outcomes` (a refused host, an over-large body, an unsafe path) fails
the item at once; other failures are tried again, :data:`STORE_ATTEMPTS` times in all.

Downloads and writes run on the :class:`~airflow_provider_doitong.batch.lanes.Lanes`' download
threads (:data:`~airflow_provider_doitong.batch.lanes.DOWNLOADS_IN_FLIGHT` at once), started as
soon as a read sees jobs complete, so that they never hold up the loop's next submission or read.
A thread only downloads, checks and writes; what it did is recorded in the ledger by the loop's
thread (:meth:`ImageStorer.collect`), one flush for every image finished since the last. An image
written but not yet recorded when the process dies is downloaded and written again by the next
try: its item is still ``completed`` in the ledger.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.lanes import Lanes
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.planner import Planner
from airflow_provider_doitong.client import DoitongClient, DoitongError, Job, observability
from airflow_provider_doitong.client.outcomes import Answer, answer_for
from airflow_provider_doitong.storage import UnsafeOutputPath, store_image

#: Downloads of one image tried before its item fails.
STORE_ATTEMPTS = 3
#: The shortest wait of a store step for a download to finish: a step due now cannot spin.
MIN_STORE_WAIT = 0.05


@dataclass(frozen=True)
class Written:
    """An image a download thread wrote: its file's name, SHA-256 and size, and when it was downloaded."""

    name: str
    sha256: str
    size: int
    downloaded_at: float
    written_at: float


def _download_and_write(
    client: DoitongClient, *, url: str, folder: Any, stem: str, clock: Callable[[], float]
) -> Written:
    """A download thread's work: fetch the image (checked by the client), write it, hash it."""
    data = client.download(url)
    downloaded = clock()
    name = store_image(folder, stem, data, folder=True).name
    return Written(name, hashlib.sha256(data).hexdigest(), len(data), downloaded, clock())


class ImageStorer:
    """Stores completed items, several at once.

    :param jobs: the runner's cache of jobs as last read (their output URLs), shared with its reads;
        only the loop's thread touches it.
    :param lanes: the threads the downloads and writes run on.
    """

    def __init__(
        self,
        *,
        items: Sequence[BatchItem],
        ledger: Ledger,
        client: DoitongClient,
        planner: Planner,
        folder: Any,
        jobs: dict[str, Job],
        log: logging.Logger | Any,
        lanes: Lanes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.items = items
        self.ledger = ledger
        self.client = client
        self.planner = planner
        self.folder = folder
        self.jobs = jobs
        self.log = log
        self.lanes = lanes
        self.clock = clock
        self._failures: dict[int, int] = {}
        #: Downloads started and not yet recorded, by item.
        self._in_flight: dict[int, Future[Written]] = {}
        #: Items whose download ended, in the order they ended (filled by the threads).
        self._ended: queue.SimpleQueue[int] = queue.SimpleQueue()

    @property
    def in_flight(self) -> int:
        """Downloads started and not yet recorded."""
        return len(self._in_flight)

    def start(self) -> int:
        """Start downloading every completed item not already in flight.

        :return: how many were started.
        """
        indices = [i for i in self.ledger.in_state(ItemState.COMPLETED) if i not in self._in_flight]
        self._refresh([i for i in indices if str(self.ledger.records[i].job_id) not in self.jobs])
        started = 0
        for index in indices:
            job = self.jobs.get(str(self.ledger.records[index].job_id))
            if job is None or not job.url:
                self._store_failed(index, "its completed job has no output URL")
                continue
            stem = self.items[index].stem(len(self.items))
            task = functools.partial(
                _download_and_write, url=job.url, folder=self.folder, stem=stem, clock=self.clock
            )
            future = self.lanes.download(task)
            self._in_flight[index] = future
            future.add_done_callback(functools.partial(self._ended_now, index))
            started += 1
        return started

    def store(self, *, until: float) -> None:
        """Start the completed items' downloads, record those that end before ``until`` (returning as
        soon as one has), and flush the ledger.

        :param until: the Unix time the runner must be asked again by.
        """
        self.start()
        first = None
        if self._in_flight and self._ended.empty():
            try:
                first = self._ended.get(timeout=max(MIN_STORE_WAIT, until - self.clock()))
            except queue.Empty:
                pass
        self.collect(first)
        self.ledger.flush()

    def collect(self, first: int | None = None) -> int:
        """Record every download that ended since the last call (not flushed; the loop's thread only).

        :param first: an item whose end was already taken from the queue.
        :return: how many.
        """
        ended = 0
        index = first
        while True:
            if index is None:
                try:
                    index = self._ended.get_nowait()
                except queue.Empty:
                    return ended
            future = self._in_flight.get(index)
            if future is not None and future.done():  # not a later download of the same item
                del self._in_flight[index]
                self._record(index, future)
                ended += 1
            index = None

    def _ended_now(self, index: int, _future: Future[Written]) -> None:
        """A download thread's last act: say which item's download ended."""
        self._ended.put(index)

    def drain(self) -> None:
        """Wait for every download in flight, record them and flush the ledger."""
        for index, future in list(self._in_flight.items()):
            future.exception()  # waits; what it raised is recorded
            del self._in_flight[index]
            self._record(index, future)
        self.ledger.flush()

    def _refresh(self, indices: list[int]) -> None:
        """Re-read completed jobs whose output URL this process has not seen (after a resume)."""
        if not indices:
            return
        ids = [str(self.ledger.records[i].job_id) for i in indices]
        try:
            jobs = self.client.get_jobs(ids)
        except DoitongError as exc:
            self.log.warning("Reading completed jobs again failed: %s", exc)
            return
        finally:
            self.planner.saw_rate_limit(self.client.last_rate_limit)
        for job_id, job in jobs.items():
            if job is not None:
                self.jobs[job_id] = job

    def _record(self, index: int, future: Future[Written]) -> None:
        """Record what a download thread did for item ``index``."""
        record = self.ledger.records[index]
        try:
            written = future.result()
        except (DoitongError, UnsafeOutputPath) as exc:
            if answer_for(exc, downloading=True) is not Answer.RETRY:  # the same answer would come again
                return self._store_failed(index, f"not stored: {exc}", final=True)
            self.jobs.pop(str(record.job_id), None)  # read the job again: its URL may have changed
            return self._store_failed(index, f"the download failed: {exc}")
        self.ledger.update(
            index,
            state=ItemState.STORED,
            file=written.name,
            sha256=written.sha256,
            bytes=written.size,
            error=None,
        )
        self._observe(index, written)
        self.log.info(
            "[%d/%d] stored %s (job %s, %s credits, %.1fs)",
            self.ledger.count(ItemState.STORED),
            len(self.items),
            written.name,
            record.job_id,
            "?" if record.credits is None else record.credits,
            record.duration or 0.0,
        )
        return None

    def _observe(self, index: int, written: Written) -> None:
        record = self.ledger.records[index]
        submitted = record.submitted_at
        trace = observability.JobTrace(
            job_id=str(record.job_id),
            model=self.items[index].request.provider,
            credits=record.credits,
            submitted_at=submitted if submitted is not None else written.downloaded_at,
            ended_at=None if submitted is None or record.duration is None else submitted + record.duration,
            stored_at=written.written_at,
            item=index + 1,
            events=(("downloaded", written.downloaded_at),),
        )
        observability.stored(self.client.observer, trace=trace, size=written.size)

    def _store_failed(self, index: int, reason: str, *, final: bool = False) -> None:
        failures = self._failures.get(index, 0) + 1
        self._failures[index] = failures
        if final or failures >= STORE_ATTEMPTS:
            self.ledger.update(index, state=ItemState.FAILED, error=reason)
            self.log.error("Item %d could not be stored: %s", index + 1, reason)
        else:
            self.log.warning("Item %d not stored yet (%s); trying again", index + 1, reason)
