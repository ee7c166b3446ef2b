"""Submissions in groups sent at once: one ledger flush each way, each answer's verdict as before.

The group commit and the verdicts are decisions on what a client answered, so a fake client stands in
for the API here (its answers are the test's input) and a counting in-memory store for the ledger's
files; the ledger, the runner, the submitter and their threads are real. The overlap itself is shown
against the emulator, through real Airflow.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.batch.ledger import Ledger
from airflow_provider_doitong.batch.planner import Limits, Planner
from airflow_provider_doitong.batch.runner import BatchRunner
from airflow_provider_doitong.batch.submitter import group_size
from airflow_provider_doitong.client import (
    DoitongBadRequest,
    DoitongRateLimited,
    DoitongUnauthorized,
    Job,
    JobStatus,
    RetryPolicy,
)
from airflow_provider_doitong.client.observability import NO_OBSERVER
from airflow_provider_doitong.client.ratelimit import RateLimitInfo
from airflow_provider_doitong.storage import storage_path
from tests.batch.test_batch_operator import batch_dag
from tests.conftest import conn_json, run_dag, task_states

OWNER = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}


class MemoryStore:
    """A :class:`~airflow_provider_doitong.batch.ledger.LedgerStore` in memory that counts its durable writes."""

    location = "memory://ledger.json"
    journal_location = "memory://ledger.journal.jsonl"
    journal_objects = 1

    def __init__(self) -> None:
        self.snapshot: str | None = None
        self.journal = b""
        self.writes = 0  # each one a sync on a local disk, one object on object storage

    def read_snapshot(self) -> str | None:
        return self.snapshot

    def write_snapshot(self, text: str) -> None:
        self.snapshot, self.writes = text, self.writes + 1

    def read_journal(self) -> bytes:
        return self.journal

    def cut_journal(self, size: int) -> None:
        self.journal = self.journal[:size]

    def append_journal(self, text: str, *, seq: int) -> None:
        self.journal, self.writes = self.journal + text.encode(), self.writes + 1

    def reset_journal(self) -> None:
        self.journal = b""

    def close(self) -> None:
        return None


class Answers:
    """A client whose submissions are answered by ``answer(prompt)``: a job, or an error raised.

    Each POST records what the store held durably when it was sent, and how many were in flight.
    """

    last_rate_limit = None
    observer = NO_OBSERVER
    retry_policy = RetryPolicy()

    def __init__(
        self, store: MemoryStore, items: list[Any], answer: Any, hold: float = 0.0, rates: Any = None
    ) -> None:
        self.store, self.items, self.answer, self.hold = store, items, answer, hold
        self.rates = rates  # the rate-limit headers of the n-th answer, if any
        self.answered = itertools.count()
        # shared with the copies the submission threads use
        self.durable_at_post: dict[int, str] = {}
        self.flight = {"now": 0, "most": 0}
        self._lock = threading.Lock()

    @property
    def most_in_flight(self) -> int:
        return self.flight["most"]

    def submit(self, request: Any, *, retry_policy: Any = None) -> Job:
        index = next(i for i, item in enumerate(self.items) if item.request == request)
        with self._lock:
            seen = Ledger.open(self.store, items=self.items, owner=OWNER)
            self.durable_at_post[index] = seen.records[index].state.value
            self.flight["now"] += 1
            self.flight["most"] = max(self.flight["most"], self.flight["now"])
        try:
            time.sleep(self.hold)
            if self.rates is not None:
                self.last_rate_limit = self.rates(next(self.answered))
            return self.answer(index)
        finally:
            with self._lock:
                self.flight["now"] -= 1


def job(index: int) -> Job:
    return Job(id=f"job-{index}", status=JobStatus.QUEUED, raw_status="queued", credit_cost=10)


def runner_for(
    count: int,
    answer: Any,
    *,
    hold: float = 0.0,
    max_credits: int | None = None,
    requests_per_window: int | None = None,
    rates: Any = None,
    concurrency: int = 100,
) -> Any:
    items = build_items(entries_from_list([f"prompt {n}" for n in range(count)]), ItemDefaults())[0]
    store = MemoryStore()
    ledger = Ledger.open(store, items=items, owner=OWNER)
    ledger.set_meta(started=True)
    ledger.flush()  # persisted, as the operator does before its first submission
    client = Answers(store, items, answer, hold, rates)
    planner = Planner(
        limits=Limits(concurrency=concurrency, requests_per_window=requests_per_window, window_s=60.0),
        poll_interval=1.0,
    )
    runner = BatchRunner(
        items=items,
        ledger=ledger,
        client=client,  # type: ignore[arg-type]
        planner=planner,
        folder=storage_path("memory://unused"),
        item_retries=2,
        max_failed_items=100,
        logger=logging.getLogger(__name__),
        max_credits=max_credits,
    )
    return runner, store, client


def durable_states(store: MemoryStore, items: list[Any]) -> list[str]:
    return [record.state.value for record in Ledger.open(store, items=items, owner=OWNER).records]


def test_a_group_costs_two_durable_writes_and_each_post_follows_its_own_mark() -> None:
    runner, store, client = runner_for(8, job, hold=0.05)
    before = store.writes
    runner.submit(8)
    runner.lanes.close()
    assert store.writes - before == 2  # one for the eight marks, one for the eight job ids (was 16)
    assert client.durable_at_post == {i: "submitting" for i in range(8)}  # durable before each POST
    assert durable_states(store, runner.items) == ["running"] * 8
    assert [r.job_id for r in Ledger.open(store, items=runner.items, owner=OWNER).records] == [
        f"job-{i}" for i in range(8)
    ]
    assert client.most_in_flight > 1  # the POSTs overlapped


def test_each_verdict_of_a_concurrent_group_lands_on_its_own_item() -> None:
    def answer(index: int) -> Job:
        if index == 2:
            raise DoitongBadRequest("the prompt is refused", status=400)
        if index in (3, 4):
            raise DoitongRateLimited(
                "slow down", status=429, code="CONCURRENCY_LIMIT", retry_at=time.time() + 2.0
            )
        return job(index)

    runner, store, client = runner_for(6, answer, hold=0.05)
    now = time.time()
    runner.submit(6)
    runner.lanes.close()
    states = durable_states(store, runner.items)
    assert states[:5] == ["running", "running", "failed", "pending", "pending"]
    # the last, if its thread started only after a sibling's refusal (a loaded machine), is not sent
    assert states[5] == ("running" if client.durable_at_post.get(5) else "pending")
    records = runner.ledger.records
    assert [records[i].attempts for i in (3, 4)] == [0, 0]  # refused: no job, no attempt counted
    assert runner.submitter._refusals == 1  # two 429s of one group are one round of refusals
    assert runner.planner.submissions_blocked_until >= now + 1.0
    # the job slots refused: half the batch's slots, once for the group's two refusals
    assert runner.planner.job_slots == runner.planner.limits.concurrency // 2
    assert not runner.stop_submitting and not runner.fatal
    assert client.most_in_flight > 1


def test_a_first_wave_beside_another_batch_sending_is_refused_once_not_for_the_rest() -> None:
    sent: list[int] = []

    def answer(index: int) -> Job:  # another batch takes all but three of the free job slots
        sent.append(index)
        if len(sent) > 3:
            raise DoitongRateLimited(
                "too many jobs", status=429, code="CONCURRENCY_LIMIT", retry_at=time.time() + 2.0
            )
        return job(index)

    def rates(n: int) -> RateLimitInfo:  # two of the other batch's requests before each answer
        return RateLimitInfo(limit=60, remaining=57 - 3 * n, reset_at=time.time() + 60.0, retry_at=None)

    runner, store, _ = runner_for(10, answer, hold=0.05, requests_per_window=60, rates=rates)
    runner.submit(10)
    runner.lanes.close()
    # one at a time while the other batch's requests come in between: the fourth is refused, and
    # stops the wave (sent at once, seven would have been)
    assert sent == [0, 1, 2, 3]
    assert durable_states(store, runner.items) == ["running"] * 3 + ["pending"] * 7
    assert runner.planner.job_slots == 50  # the account's slots were refused: half the batch's


def test_a_wave_stops_where_its_latest_answers_show_the_window_spent() -> None:
    sent: list[int] = []
    reset_at = time.time() + 30.0

    def answer(index: int) -> Job:  # two requests are left after the first answer, then none
        sent.append(index)
        if len(sent) > 3:
            raise DoitongRateLimited("window spent", status=429, code="RATE_LIMITED", retry_at=reset_at)
        return job(index)

    def rates(n: int) -> RateLimitInfo:
        return RateLimitInfo(limit=60, remaining=max(0, 2 - n), reset_at=reset_at, retry_at=None)

    runner, store, _ = runner_for(8, answer, requests_per_window=60, rates=rates, concurrency=8)
    # half the window spent, 20 requests of it by others: shared
    runner.planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=40, reset_at=reset_at, retry_at=None))
    runner.submit(8)
    runner.lanes.close()
    # the first answer shows the others spent the window down to 2: the wave sends those two and
    # stops, where its groups of one, two and four went on and the fourth submission was refused
    assert sent == [0, 1, 2]
    assert durable_states(store, runner.items) == ["running"] * 3 + ["pending"] * 5
    assert runner.planner.requests_blocked_until == 0  # no refusal


def test_a_waves_first_group_is_the_planners_decision_and_goes_out() -> None:
    reset_at = time.time() + 30.0
    runner, store, _ = runner_for(
        4,
        job,
        requests_per_window=60,
        concurrency=4,
        rates=lambda n: RateLimitInfo(limit=60, remaining=0, reset_at=reset_at, retry_at=None),
    )
    # the last request of a window the others spend fast: what is likely left of it falls under one
    # as the clock moves; the planner decided on it, and the first group goes (a wave that sent
    # nothing would be decided again at once), the next ones are what its answers leave: none
    runner.planner.saw_rate_limit(RateLimitInfo(limit=60, remaining=1, reset_at=reset_at, retry_at=None))
    runner.planner.window.available(time.time(), burst=0)  # judged: the others' pace is counted from now
    runner.submit(4)
    runner.lanes.close()
    assert durable_states(store, runner.items) == ["running"] + ["pending"] * 3


def test_a_refused_key_in_a_group_ends_the_batch_and_keeps_the_others_jobs() -> None:
    def answer(index: int) -> Job:
        if index == 1:
            raise DoitongUnauthorized("bad key", status=401)
        return job(index)

    runner, store, _ = runner_for(4, answer, hold=0.05)
    runner.submit(4)
    runner.lanes.close()
    assert runner.fatal and isinstance(runner.stop_error, DoitongUnauthorized)
    assert durable_states(store, runner.items) == ["running", "pending", "running", "running"]


def test_after_a_refusal_the_threads_whose_turn_had_not_come_send_nothing() -> None:
    def answer(index: int) -> Job:
        if index == 0:
            raise DoitongRateLimited("slow down", status=429, code="RATE_LIMITED", retry_at=time.time() + 1.0)
        return job(index)

    runner, store, client = runner_for(5, answer)
    runner.lanes.submissions = 1  # one thread: the group's POSTs take turns
    verdicts = runner.submitter.submit_group(list(range(5)))
    runner.lanes.close()
    assert list(client.durable_at_post) == [0]  # the others were never sent
    assert [v.verdict.value for v in verdicts] == ["later"]
    assert durable_states(store, runner.items) == ["pending"] * 5
    assert [r.attempts for r in runner.ledger.records] == [0] * 5


def test_max_credits_sizes_the_groups_by_the_highest_charge_seen() -> None:
    assert group_size([10] * 32, headroom=None, worst_ratio=None) == 32
    assert group_size([10] * 32, headroom=1_000, worst_ratio=None) == 1  # no charge seen: one at a time
    assert group_size([10] * 32, headroom=1_000, worst_ratio=1.0) == 32  # charged as estimated
    assert group_size([10] * 32, headroom=100, worst_ratio=2.0) == 10  # each may cost 10 more
    assert group_size([10] * 32, headroom=5, worst_ratio=3.0) == 1  # the cap itself is checked first


def test_over_estimate_charges_hold_the_groups_back() -> None:
    def answer(index: int) -> Job:
        return Job(id=f"job-{index}", status=JobStatus.QUEUED, raw_status="queued", credit_cost=50)

    runner, store, client = runner_for(10, answer, max_credits=100)  # estimated at 10 each
    runner.submit(10)
    runner.lanes.close()
    assert list(client.durable_at_post) == [0]  # the first charge showed the cap would be passed
    assert runner.budget_stopped and durable_states(store, runner.items).count("running") == 1


@pytest.fixture
def slow_enterprise(doitong_emulators: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An enterprise account answering every API request 0.2 s late."""
    with doitong_emulators(
        plan="enterprise",
        concurrent_jobs=1_000,
        requests_per_minute=6_000,
        time_scale=0.05,
        job_seconds=10,
        credits=100_000,
    ) as emu:
        emu.set_faults(latency_s=0.2)
        monkeypatch.setenv("AIRFLOW_CONN_DOITONG_DEFAULT", conn_json(emu, plan="enterprise"))
        yield emu


def most_at_once(starts: list[float], *, lasting: float) -> int:
    """The most requests in flight at once, each lasting at least ``lasting`` from its start."""
    starts = sorted(starts)
    return max(sum(1 for s in starts if t - lasting < s <= t) for t in starts)


def test_submissions_are_in_flight_together(slow_enterprise: Any, tmp_path: Path) -> None:
    prompts = [f"an overlapping image, number {n}" for n in range(20)]
    run = run_dag(batch_dag("batch_overlap", prompts=prompts, output_path=str(tmp_path / "out")))
    assert task_states(run) == {"batch": "success"}
    log = slow_enterprise.request_log()
    submits = [entry["t"] for entry in log if entry["kind"] == "submit"]
    assert len(submits) == 20 and slow_enterprise.stats()["submissions_by_prompt"] == {p: 1 for p in prompts}
    # one request at a time would start each 0.2 s (its answer's delay) after the last: never two at once
    assert most_at_once(submits, lasting=0.2) >= 10
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["image_count"] == 20


def test_an_unexpected_error_in_one_submission_keeps_the_jobs_its_group_made() -> None:
    """A submission thread that raises what no verdict knows (a defect, a broken transport) ends
    the step with its error, after the jobs its siblings made are recorded: none is paid twice."""

    def answer(index: int) -> Job:
        if index == 0:
            raise RuntimeError("a broken transport")
        time.sleep(0.05)  # answered after the failing one
        return job(index)

    runner, store, _ = runner_for(4, answer)
    with pytest.raises(RuntimeError, match="broken transport"):
        runner.submit(4)
    runner.lanes.close()
    states = durable_states(store, runner.items)
    assert states[1:] == ["running"] * 3  # the paid jobs are durable, with their ids
    assert [r.job_id for r in Ledger.open(store, items=runner.items, owner=OWNER).records][1:] == [
        "job-1",
        "job-2",
        "job-3",
    ]
    assert states[0] == "submitting"  # its answer is unknown: the next try settles it as ambiguous
