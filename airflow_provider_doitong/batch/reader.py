"""Reading a batch's running jobs: one coalesced read of them all, and what each answer means for its item.

The runner asks for a read when the planner says so; this records what ended: a completed job's
item becomes ``completed`` (its image is the :class:`~airflow_provider_doitong.batch.storer.ImageStorer`'s
to store), a failed or unknown job goes back to the runner, which submits its item again or fails
it. A read that fails is tried again after a backoff the planner waits out; only a refused key
ends the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.planner import Planner
from airflow_provider_doitong.client import (
    DoitongClient,
    DoitongError,
    DoitongRateLimited,
    Job,
    JobStatus,
    RetryPolicy,
)
from airflow_provider_doitong.client.retry import backoff, rate_limit_resume_at
from airflow_provider_doitong.outcomes import Kind, kind_of


class JobReader:
    """Reads running items' jobs and records what ended.

    :param jobs: the runner's cache of jobs as last read (their output URLs), shared with the storer.
    :param job_failed: called with an item's index and why, when its job failed or is unknown.
    """

    def __init__(
        self,
        *,
        ledger: Ledger,
        client: DoitongClient,
        planner: Planner,
        jobs: dict[str, Job],
        job_failed: Callable[[int, str], None],
        log: logging.Logger | Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.planner = planner
        self.jobs = jobs
        self.job_failed = job_failed
        self.log = log
        self.clock = clock
        self._failures = 0

    def poll(self) -> DoitongError | None:
        """Read every running job in coalesced requests and record what ended.

        :return: the error that ends the batch (a refused key), if any.
        """
        running = self.ledger.in_state(ItemState.RUNNING)
        ids = [str(self.ledger.records[i].job_id) for i in running]
        now = self.clock()
        try:
            found = self.client.get_jobs(ids)
        except DoitongError as exc:
            return self._failed(exc, now)
        finally:
            self.planner.saw_rate_limit(self.client.last_rate_limit)
        self._failures = 0
        self.planner.polled(now)
        for index in running:
            job_id = str(self.ledger.records[index].job_id)
            self._observe(index, job_id, found.get(job_id))
        self.ledger.flush()
        return None

    def _failed(self, exc: DoitongError, now: float) -> DoitongError | None:
        if kind_of(exc) is Kind.REFUSED_KEY:
            return exc
        self._failures += 1
        self.planner.polled(now)
        if isinstance(exc, DoitongRateLimited):  # never sooner than the refusal floor: a reset may be stale
            until = rate_limit_resume_at(exc, attempt=self._failures, policy=RetryPolicy(), now=now)
        else:
            until = now + min(self.planner.poll_interval, backoff(RetryPolicy(), self._failures))
        self.planner.refused(until=until, all_requests=True)
        self.log.warning("Reading the running jobs failed (%d in a row; retried): %s", self._failures, exc)
        return None

    def _observe(self, index: int, job_id: str, job: Job | None) -> None:
        if job is None:
            self.job_failed(index, f"job {job_id} failed (the API does not know this job)")
        elif job.status is JobStatus.COMPLETED:
            self.jobs[job_id] = job
            # submission to completion, queueing included (the API's own duration is processing only)
            duration = job.turnaround if job.turnaround is not None else job.duration
            self.planner.learn(duration)
            self.ledger.update(
                index,
                state=ItemState.COMPLETED,
                credits=job.credit_cost,
                duration=duration,
                completed_at=job.completed_at,
            )
        elif job.status is JobStatus.FAILED:
            reason = f"{job.error_code or 'failed'}: {job.error_message or 'no reason given'}"
            self.job_failed(index, f"job {job_id} failed ({reason})")
