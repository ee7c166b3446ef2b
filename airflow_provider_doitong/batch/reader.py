"""Reading a batch's running jobs: one coalesced read of them all, and what each answer means for its item.

The runner asks for a read when the planner says so; this records what ended: a completed job's
item becomes ``completed`` (its image is the :class:`~airflow_provider_doitong.batch.storer.ImageStorer`'s
to store), a failed or unknown job goes back to the runner, which submits its item again or fails
it. A read that fails is judged by :func:`~airflow_provider_doitong.client.waiting.after_poll_error`,
the rule the sync wait and the triggerer's poller follow too, with the client's own retry policy:
an unavailable API is waited out (the planner holds every request until the backoff is over), a
refused key is read again once from the connection (a rotated key), and what cannot be cured (a
second refusal in a row, a 400, answers that keep breaking the contract) ends the batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.planner import Planner
from airflow_provider_doitong.client import DoitongClient, DoitongError, Job, JobStatus
from airflow_provider_doitong.client.errors import was_held
from airflow_provider_doitong.client.waiting import after_poll_error


class JobReader:
    """Reads running items' jobs and records what ended.

    :param jobs: the runner's cache of jobs as last read (their output URLs), shared with the storer.
    :param job_failed: called with an item's index and why, when its job failed or is unknown.
    :param refresh_key: called once when the API refuses the key, for the connection's current one
        (a rotated key); without it a refused key ends the batch.
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
        refresh_key: Callable[[], str] | None = None,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.planner = planner
        self.jobs = jobs
        self.job_failed = job_failed
        self.log = log
        self.clock = clock
        self.refresh_key = refresh_key
        self._failures = 0
        self._reauthed = False

    def poll(self) -> DoitongError | None:
        """Read every running job in coalesced requests and record what ended.

        :return: the error that ends the batch (see :func:`after_poll_error`), if any.
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
        if self._failures:
            self.log.info("Doitong answers again after %d failed reads", self._failures)
        self._failures, self._reauthed = 0, False
        self.planner.polled(now)
        for index in running:
            job_id = str(self.ledger.records[index].job_id)
            self._observe(index, job_id, found.get(job_id))
        self.ledger.flush()
        return None

    def _failed(self, exc: DoitongError, now: float) -> DoitongError | None:
        held = was_held(exc)  # unsent for a window seen spent: no failure, a wait for its reset
        self._failures += 0 if held else 1
        step = after_poll_error(
            "(the batch's running jobs)",
            exc,
            failures=max(1, self._failures),
            reauthed=self._reauthed,
            now=now,
            deadline=None,
            policy=self.client.retry_policy,
        )
        if step.reauth:
            if self.refresh_key is None:
                return exc
            self.log.warning("Doitong refused the API key (%s); reading the connection again", exc)
            self._reauthed = True
            self.client.set_api_key(self.refresh_key())
            self.planner.poll_now = True  # read again at once, with the key just read
            return None
        if step.error is not None:  # the wait's own errors (a timeout) need a deadline: none here
            self.log.error("Reading the running jobs failed (%d in a row): %s", self._failures, exc)
            return exc
        self.planner.polled(now)
        self.planner.refused(until=now + step.sleep, all_requests=True)
        if held:
            self.log.info("%s; reading again in %.1fs", exc, step.sleep)
            return None
        self.log.warning(
            "Reading the running jobs failed (%d in a row): %s; reading again in %.1fs",
            self._failures,
            exc,
            step.sleep,
        )
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
