"""The account's job slots as one host's processes tell each other of them (fake times, real files)."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import pytest

from airflow_provider_doitong.client import DoitongClient, DoitongRateLimited, ImageRequest, RetryPolicy
from airflow_provider_doitong.client import observability as obs
from airflow_provider_doitong.client.models import Job
from airflow_provider_doitong.client.slots import (
    LOCK_WAIT_S,
    MAX_HOLD_S,
    MAX_SLOTS_FILE_BYTES,
    MIN_HOLD_S,
    MIN_LEASE_S,
    ORPHAN_LEASE_S,
    STALE_FILE_S,
    SlotBoard,
    counts_until,
    job_key,
    parse_slots_file,
)
from tests.observability.recorder import RecordingObserver

BASE = "https://api.doitong.example"
KEY = "sk-live-0123456789abcdef"
NOW = time.time()  # the files' own times are real: a stale file is judged by them


def slots(folder: Path, *, concurrency: int = 3, key: str = KEY) -> SlotBoard:
    made = SlotBoard.for_account(base_url=BASE, api_key=key, concurrency=concurrency, directory=folder)
    assert made is not None
    return made


def running(job_id: str, created_at: str | None = None) -> Job:
    return Job.from_api({"id": job_id, "status": "processing", "createdAt": created_at})


def completed(job_id: str, *, took: float | None = None) -> Job:
    data = {"id": job_id, "status": "completed", "url": "https://cdn.example/x.png"}
    if took is not None:
        data |= {"createdAt": "2026-12-05T10:00:00Z", "completedAt": f"2026-12-05T10:00:{took:06.3f}Z"}
    return Job.from_api(data)


def accept(board: SlotBoard, *ids: str, now: float = NOW) -> None:
    for job_id in ids:
        assert board.claim(now) is None
        board.settle(running(job_id), now)


def test_jobs_another_process_runs_hold_a_submission_until_the_first_may_have_ended(tmp_path: Path) -> None:
    batch, other = slots(tmp_path), slots(tmp_path)  # two processes' clients
    accept(batch, "a", "b")
    accept(batch, "c", now=NOW + 1)
    held = other.claim(NOW + 1.5)
    assert held == (NOW + 1.5 + MAX_HOLD_S, 3)  # counted again soon: their process runs, and will tell
    batch.saw({"a": completed("a")}, NOW + 1.6)  # seen ended by its owner: ended for every process
    assert other.claim(NOW + 1.7) is None
    assert slots(tmp_path, key="sk-another-account").claim(NOW + 1.7) is None  # the account's only


def test_a_submission_in_flight_takes_its_slot_until_it_is_answered(tmp_path: Path) -> None:
    board = slots(tmp_path, concurrency=2)
    assert board.claim(NOW) is None and board.claim(NOW) is None
    assert board.claim(NOW) == (NOW + MIN_HOLD_S, 2)  # no job to wait for: counted again soon
    board.settle(None, NOW)  # refused, or lost: nothing counts
    board.settle(running("b"), NOW)
    assert board.claim(NOW) is None


def test_a_job_the_triggerer_saw_end_no_longer_counts_in_the_file_of_the_worker_that_submitted_it(
    tmp_path: Path,
) -> None:
    worker, triggerer, third = slots(tmp_path, concurrency=1), slots(tmp_path), slots(tmp_path, concurrency=1)
    accept(worker, "job-1")
    triggerer.saw({"job-1": running("job-1")}, NOW + 1)
    assert third.claim(NOW + 1.5) is not None
    triggerer.saw({"job-1": completed("job-1", took=4.0)}, NOW + 4.2)
    assert third.claim(NOW + 4.3) is None
    assert worker.path.exists()  # the worker's file still says running: the end told elsewhere wins


def test_a_job_counts_until_the_hosts_typical_end_or_its_process_says_it_ended() -> None:
    assert counts_until(NOW, NOW, None) == NOW + 600  # its process runs: until it reads the end
    assert counts_until(NOW, NOW, None, alive=False) == NOW + ORPHAN_LEASE_S  # a task that deferred
    assert counts_until(NOW, NOW + 80, None, alive=False) == NOW + 80 + 20  # a quarter of its age then
    assert counts_until(NOW, NOW + 3, 70.0) == NOW + 71  # the host's jobs take 70 s
    assert counts_until(NOW, NOW + 40, 4.0) == NOW + 40 + 10  # past it: a quarter of its age then
    assert counts_until(NOW, NOW, 1.0) == NOW + MIN_LEASE_S
    assert counts_until(NOW, NOW + 3, 10_000.0) == NOW + 3 + 600  # never long past a sighting


def test_the_jobs_of_a_process_that_has_ended_count_for_a_lease(tmp_path: Path) -> None:
    board = slots(tmp_path, concurrency=1)
    gone = tmp_path / f"{board.account}.slots.999999999-0badc0de.json"  # no such process
    gone.write_text(json.dumps({"format": 1, "running": {job_key("j"): [NOW, NOW]}}))
    gone.chmod(0o600)
    assert board.claim(NOW + ORPHAN_LEASE_S - 1) is not None
    assert board.claim(NOW + ORPHAN_LEASE_S + 0.1) is None


def test_durations_seen_by_one_process_tell_every_other_when_its_jobs_should_end(tmp_path: Path) -> None:
    one, two, three = (
        slots(tmp_path, concurrency=1),
        slots(tmp_path, concurrency=1),
        slots(tmp_path, concurrency=1),
    )
    accept(one, "old")
    one.saw({"old": completed("old", took=30.0)}, NOW + 30)
    accept(two, "new", now=NOW + 31)
    until, taken = three.claim(NOW + 35) or (0.0, 0)
    assert taken == 1 and until == pytest.approx(NOW + 62, abs=0.01)  # until it may have ended
    assert counts_until(NOW + 31, NOW + 31, 30.0) == NOW + 62  # its expected end, and a margin
    assert three.claim(NOW + 62.1) is None  # past it: the API judges


@pytest.mark.parametrize(
    "content",
    [
        b'{"format": 1, "running": {"0123456789abcdef": [1, 2]',
        b'{"format": 2, "running": {"0123456789abcdef": [%f, %f]}}' % (NOW, NOW),
        b'{"format": 1, "running": {"../../etc/passwd": [%f, %f]}}' % (NOW, NOW),
        b'{"format": 1, "running": {"0123456789abcdef": [%f, %f]}}' % (NOW + 5, NOW),
        b'{"format": 1, "running": {"0123456789abcdef": [%f, %f]}}' % (NOW, NOW + 60),
        b'{"format": 1, "running": {"0123456789abcdef": ["1", true]}}',
        b'{"format": 1, "running": {"0123456789abcdef": [NaN, Infinity]}}',
        b"[1, 2, 3]",
    ],
    ids=[
        "torn",
        "another format",
        "not a key",
        "seen before made",
        "from the future",
        "not times",
        "not finite",
        "a list",
    ],
)
def test_a_file_that_is_torn_foreign_or_impossible_counts_nothing(tmp_path: Path, content: bytes) -> None:
    board = slots(tmp_path, concurrency=1)
    path = tmp_path / f"{board.account}.slots.1-feedface.json"
    path.write_bytes(content)
    path.chmod(0o600)
    assert board.claim(NOW) is None
    assert parse_slots_file(content, NOW).running == {}


def test_a_symlink_a_file_others_may_write_or_an_oversized_one_counts_nothing(tmp_path: Path) -> None:
    board, owner = slots(tmp_path, concurrency=1), slots(tmp_path)
    accept(owner, "x")
    real = owner.path.read_bytes()
    owner.path.unlink()
    outside = tmp_path.parent / f"{tmp_path.name}-outside.json"
    outside.write_bytes(real)
    outside.chmod(0o600)
    link = tmp_path / f"{board.account}.slots.2-link.json"
    link.symlink_to(outside)
    assert board.claim(NOW) is None
    board.settle(None, NOW)
    link.unlink()
    shared = tmp_path / f"{board.account}.slots.3-shared.json"
    shared.write_bytes(real)
    shared.chmod(0o666)
    assert board.claim(NOW) is None
    board.settle(None, NOW)
    shared.chmod(0o600)
    assert board.claim(NOW) is not None  # the same file, private: it counts
    big = json.loads(real) | {"padding": "x" * MAX_SLOTS_FILE_BYTES}
    shared.write_text(json.dumps(big))
    assert board.claim(NOW) is None


def test_a_file_of_an_own_folder_others_may_enter_gives_no_board(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert SlotBoard.for_account(base_url=BASE, api_key=KEY, concurrency=3, directory=folder) is None


def test_a_file_with_nothing_to_tell_is_removed_and_a_long_untouched_one_too(tmp_path: Path) -> None:
    board, other = slots(tmp_path), slots(tmp_path)
    accept(board, "job-0042")
    assert board.path.exists() and KEY not in board.path.name and "job-0042" not in board.path.read_text()
    board.saw({"job-0042": completed("job-0042")}, NOW + 1)  # its own job: no one else need be told
    assert not board.path.exists()
    accept(other, "job-0043")
    board.saw({"job-0043": completed("job-0043")}, NOW + 2)  # another's: told it ended...
    assert job_key("job-0043") in board.path.read_text()
    board.saw({}, NOW + 1000)
    assert not board.path.exists()  # ... for a while
    old = NOW - STALE_FILE_S - 60
    os.utime(other.path, (old, old))
    assert board.claim(NOW) is None
    assert not other.path.exists()


def test_a_held_submission_is_not_sent_and_says_why(tmp_path: Path) -> None:
    observer = RecordingObserver()
    others = slots(tmp_path, concurrency=1)
    accept(others, "theirs")
    client = DoitongClient(
        api_key=KEY,
        base_url="http://127.0.0.1:9",  # nothing listens there: a request sent would fail otherwise
        slots=slots(tmp_path, concurrency=1),
        observer=observer,
        retry_policy=RetryPolicy(max_rate_limit_wait=0),  # the hold handed back, not waited out
    )
    request = ImageRequest(prompt="a red fox", provider="flux-krea", width=512, height=512)
    with pytest.raises(DoitongRateLimited) as caught:
        client.submit(request)
    error = caught.value
    assert error.held and error.code == "CONCURRENCY_LIMIT" and error.status is None
    assert error.retry_at is not None and error.retry_at <= time.time() + MAX_HOLD_S + 1
    assert "1 jobs known running on this host" in str(error) and "not sent" in str(error)
    assert observer.total(obs.REQUESTS_HELD) == 1 and observer.total(obs.JOBS_REFUSED) == 0
    assert job_key("theirs") in others.path.read_text()


def test_submissions_in_flight_in_another_process_are_counted_until_answered(tmp_path: Path) -> None:
    one, two = slots(tmp_path, concurrency=2), slots(tmp_path, concurrency=2)
    accept(two, "x")  # two processes share the account: each claim is written at once
    assert one.claim(NOW) is None  # sent, not yet answered
    assert two.claim(NOW) == (pytest.approx(NOW + MIN_HOLD_S), 2)
    one.settle(None, NOW + 0.1)  # refused: nothing made
    assert two.claim(NOW + 0.2) is None


def test_another_process_s_claim_counts_a_short_while_if_it_is_never_answered(tmp_path: Path) -> None:
    lost, other = slots(tmp_path, concurrency=1), slots(tmp_path, concurrency=1)
    accept(slots(tmp_path), "x")  # a third process: every claim is written at once
    lost.saw({"x": completed("x")}, NOW)
    assert lost.claim(NOW) is None  # sent; its process dies before the answer
    assert other.claim(NOW + 0.5) is not None
    assert other.claim(NOW + MIN_LEASE_S + 0.1) is None  # the file unchanged since: the claim lapsed


def test_a_closed_clients_jobs_count_for_a_lease_and_a_job_given_up_not_at_all(tmp_path: Path) -> None:
    board, closing, watching = slots(tmp_path, concurrency=1), slots(tmp_path), slots(tmp_path)
    accept(closing, "a")
    closing.close(NOW)  # a task's client, closed as it defers: its process may live on
    assert board.claim(NOW + ORPHAN_LEASE_S - 1) is not None
    assert board.claim(NOW + ORPHAN_LEASE_S + 0.1) is None
    board.settle(None, NOW)
    watching.saw({"b": running("b")}, NOW + 20)
    assert board.claim(NOW + 21) is not None
    watching.forget(["b"], NOW + 22)  # its trigger was cancelled: no one here reads it any more
    assert board.claim(NOW + 22.1) is None


def test_forgetting_jobs_already_seen_ended_writes_nothing(tmp_path: Path) -> None:
    board = slots(tmp_path)
    board.saw({"a": running("a"), "b": running("b")}, NOW)
    board.saw({"a": completed("a")}, NOW + 1)
    written = board.path.stat().st_mtime_ns
    os.utime(board.path, ns=(written - 10**9, written - 10**9))
    board.forget(["a"], NOW + 2)  # a trigger's job, its watcher gone once it ended: nothing to tell
    assert board.path.stat().st_mtime_ns == written - 10**9
    board.forget(["b"], NOW + 3)
    assert job_key("b") not in board.path.read_text()


def test_a_file_nested_past_the_parsers_depth_or_named_with_an_impossible_pid_counts_nothing(
    tmp_path: Path,
) -> None:
    board = slots(tmp_path, concurrency=1)
    deep = tmp_path / f"{board.account}.slots.1-deadbeef.json"
    deep.write_bytes(b"[" * 200_000)
    huge_pid = tmp_path / f"{board.account}.slots.99999999999999999999-feed.json"
    huge_pid.write_text(json.dumps({"format": 1, "running": {job_key("j"): [NOW, NOW]}}))
    for path in (deep, huge_pid):
        path.chmod(0o600)
    assert board.claim(NOW) is not None  # the second counts (its process taken to run), the first not
    huge_pid.unlink()
    assert board.claim(NOW) is None


def test_a_lock_held_by_a_process_that_hangs_delays_a_claim_briefly_not_forever(tmp_path: Path) -> None:
    board = slots(tmp_path)
    lock = tmp_path / f"{board.account}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process's, never let go
        started = time.monotonic()
        assert board.claim(NOW) is None
        assert time.monotonic() - started < LOCK_WAIT_S + 1.0
    finally:
        os.close(fd)


def test_once_the_hosts_typical_duration_is_known_a_hold_lasts_until_the_first_job_may_have_ended(
    tmp_path: Path,
) -> None:
    one, two = slots(tmp_path, concurrency=1), slots(tmp_path, concurrency=1)
    accept(one, "old")
    one.saw({"old": completed("old", took=30.0)}, NOW + 30)
    accept(one, "new", now=NOW + 31)
    assert two.claim(NOW + 35) == (pytest.approx(NOW + 62, abs=0.01), 1)  # not counted again each 2 s
