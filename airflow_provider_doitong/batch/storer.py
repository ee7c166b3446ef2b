"""Storing a batch's finished images: downloaded by the client (checked), written by ``storage``.

Each image is named by its item (``0007-a-fox-in-the-snow.jpg``: the item's number and prompt, the
extension from the image's own bytes), never by anything the API sent, and recorded ``stored`` in
the ledger with its SHA-256 once written. An output whose answer is final in
:mod:`~airflow_provider_doitong.client.outcomes` (a refused host, an over-large body, an unsafe path) fails
the item at once; other failures are tried again, :data:`STORE_ATTEMPTS` times in all.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from airflow_provider_doitong.batch.items import BatchItem
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.planner import Planner
from airflow_provider_doitong.client import DoitongClient, DoitongError, Job, observability
from airflow_provider_doitong.client.outcomes import Answer, answer_for
from airflow_provider_doitong.storage import UnsafeOutputPath, store_image

#: Downloads of one image tried before its item fails.
STORE_ATTEMPTS = 3


class ImageStorer:
    """Stores completed items.

    :param jobs: the runner's cache of jobs as last read (their output URLs), shared with its reads.
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.items = items
        self.ledger = ledger
        self.client = client
        self.planner = planner
        self.folder = folder
        self.jobs = jobs
        self.log = log
        self.clock = clock
        self._failures: dict[int, int] = {}

    def store(self, *, until: float) -> None:
        """Store completed items until ``until`` (at least one), then flush the ledger.

        :param until: the Unix time the runner must be asked again by.
        """
        indices = self.ledger.in_state(ItemState.COMPLETED)
        self._refresh([i for i in indices if str(self.ledger.records[i].job_id) not in self.jobs])
        for index in indices:
            self._store_one(index)
            if self.clock() >= until:
                break
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

    def _store_one(self, index: int) -> None:
        record = self.ledger.records[index]
        job = self.jobs.get(str(record.job_id))
        if job is None or not job.url:
            return self._store_failed(index, "its completed job has no output URL")
        stem = self.items[index].stem(len(self.items))
        try:
            data = self.client.download(job.url)
            downloaded = self.clock()
            name = store_image(self.folder, stem, data, folder=True).name
        except (DoitongError, UnsafeOutputPath) as exc:
            if answer_for(exc, downloading=True) is not Answer.RETRY:  # the same answer would come again
                return self._store_failed(index, f"not stored: {exc}", final=True)
            self.jobs.pop(str(record.job_id), None)  # read the job again: its URL may have changed
            return self._store_failed(index, f"the download failed: {exc}")
        digest = hashlib.sha256(data).hexdigest()
        self.ledger.update(
            index, state=ItemState.STORED, file=name, sha256=digest, bytes=len(data), error=None
        )
        self._observe(index, size=len(data), downloaded=downloaded)
        self.log.info(
            "[%d/%d] stored %s (job %s, %s credits, %.1fs)",
            self.ledger.count(ItemState.STORED),
            len(self.items),
            name,
            record.job_id,
            "?" if record.credits is None else record.credits,
            record.duration or 0.0,
        )
        return None

    def _observe(self, index: int, *, size: int, downloaded: float) -> None:
        record = self.ledger.records[index]
        submitted = record.submitted_at
        trace = observability.JobTrace(
            job_id=str(record.job_id),
            model=self.items[index].request.provider,
            credits=record.credits,
            submitted_at=submitted if submitted is not None else downloaded,
            ended_at=None if submitted is None or record.duration is None else submitted + record.duration,
            stored_at=self.clock(),
            item=index + 1,
            events=(("downloaded", downloaded),),
        )
        observability.stored(self.client.observer, trace=trace, size=size)

    def _store_failed(self, index: int, reason: str, *, final: bool = False) -> None:
        failures = self._failures.get(index, 0) + 1
        self._failures[index] = failures
        if final or failures >= STORE_ATTEMPTS:
            self.ledger.update(index, state=ItemState.FAILED, error=reason)
            self.log.error("Item %d could not be stored: %s", index + 1, reason)
        else:
            self.log.warning("Item %d not stored yet (%s); trying again", index + 1, reason)
