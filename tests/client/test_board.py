"""The board on which one host's processes tell each other that the account's window is spent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from airflow_provider_doitong.client import (
    DoitongClient,
    DoitongRateLimited,
    ImageRequest,
    RetryPolicy,
    protocol,
)
from airflow_provider_doitong.client import observability as obs
from airflow_provider_doitong.client.board import BOARD_DIR_ENV, WindowBoard, default_directory
from airflow_provider_doitong.client.pacing import RESET_MARGIN
from airflow_provider_doitong.client.ratelimit import RateLimitInfo
from airflow_provider_doitong.client.retry import rate_limit_resume_at
from airflow_provider_doitong.client.waiting import JobWait
from tests.observability.recorder import RecordingObserver

BASE = "https://api.doitong.example"
KEY = "sk-live-0123456789abcdef"
NOW = 1_796_000_000.0  # a Unix time: a reset header this large is one


def board(folder: Path, *, key: str = KEY, base: str = BASE) -> WindowBoard:
    made = WindowBoard.for_account(base_url=base, api_key=key, directory=folder)
    assert made is not None
    return made


def test_a_spent_window_is_told_to_every_board_of_the_account_until_its_reset(tmp_path: Path) -> None:
    board(tmp_path).post(NOW + 30, NOW)
    other = board(tmp_path)  # another process's
    assert other.spent_until(NOW + 1) == NOW + 30
    assert other.spent_until(NOW + 30) is None  # reset
    assert board(tmp_path, key="sk-other-account").spent_until(NOW + 1) is None
    assert board(tmp_path, base="https://eu.doitong.example").spent_until(NOW + 1) is None
    assert KEY not in other.path.name and len(other.path.name) == len("0" * 32 + ".json")


def test_a_later_reset_replaces_an_earlier_one_and_not_the_other_way(tmp_path: Path) -> None:
    one = board(tmp_path)
    one.post(NOW + 30, NOW)
    one.post(NOW + 10, NOW + 1)  # an answer of the same window, late
    assert one.spent_until(NOW + 2) == NOW + 30
    one.post(NOW + 90, NOW + 31)  # the next window, spent too
    assert one.spent_until(NOW + 32) == NOW + 90


@pytest.mark.parametrize(
    "content",
    [
        b'{"format": 1, "reset_at": 1796000030.0',  # torn
        b"[1796000030.0, 1796000000.0]",
        b'{"format": 2, "reset_at": 1796000030.0, "seen_at": 1796000000.0}',
        b'{"format": 1, "reset_at": "1796000030", "seen_at": 1796000000.0}',
        b'{"format": 1, "reset_at": true, "seen_at": 1796000000.0}',
        b'{"format": 1, "reset_at": NaN, "seen_at": 1796000000.0}',
        b'{"format": 1, "reset_at": 1796000500.0, "seen_at": 1796000000.0}',  # beyond two windows
        b'{"format": 1, "reset_at": 1796000030.0, "seen_at": 1796000020.0}',  # seen in the future
        b'{"format": 1, "reset_at": 1796000030.0, "seen_at": 1795999000.0}',  # seen windows ago
        b'{"format": 1, "reset_at": 1795999990.0, "seen_at": 1795999980.0}',  # reset already
        b'{"format": 1, "reset_at": 1796000030.0, "seen_at": 1796000000.0, "pad": "' + b"x" * 300 + b'"}',
    ],
)
def test_a_board_that_is_not_as_written_holds_nothing(tmp_path: Path, content: bytes) -> None:
    one = board(tmp_path)
    one.path.write_bytes(content)
    assert one.spent_until(NOW + 1) is None
    one.post(NOW + 30, NOW)  # and is replaced whole by the next sighting
    assert one.spent_until(NOW + 1) == NOW + 30


def test_a_board_that_is_a_symlink_or_not_a_file_holds_nothing(tmp_path: Path) -> None:
    one = board(tmp_path)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"format": 1, "reset_at": NOW + 30, "seen_at": NOW}))
    one.path.symlink_to(elsewhere)
    assert one.spent_until(NOW + 1) is None
    one.post(NOW + 20, NOW)  # replaces the link, never writes through it
    assert not one.path.is_symlink() and json.loads(elsewhere.read_text())["reset_at"] == NOW + 30
    one.path.unlink()
    one.path.mkdir()
    assert one.spent_until(NOW + 1) is None


def test_no_board_in_a_folder_others_may_write_or_that_is_a_symlink(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert WindowBoard.for_account(base_url=BASE, api_key=KEY, directory=shared) is None
    (tmp_path / "link").symlink_to(tmp_path / "private", target_is_directory=True)
    (tmp_path / "private").mkdir(mode=0o700)
    assert WindowBoard.for_account(base_url=BASE, api_key=KEY, directory=tmp_path / "link") is None
    made = WindowBoard.for_account(base_url=BASE, api_key=KEY, directory=tmp_path / "new")
    assert made is not None and (os.stat(tmp_path / "new").st_mode & 0o777) == 0o700


def test_the_boards_folder_is_the_users_own_unless_named_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BOARD_DIR_ENV)
    assert default_directory() is not None and default_directory().name == f"doitong-board-{os.getuid()}"  # type: ignore[union-attr]
    monkeypatch.setenv(BOARD_DIR_ENV, "/srv/doitong/boards")
    assert default_directory() == Path("/srv/doitong/boards")
    monkeypatch.setenv(BOARD_DIR_ENV, "off")
    assert default_directory() is None


def client(folder: Path, now: float) -> DoitongClient:
    return DoitongClient(api_key=KEY, base_url=BASE, board=board(folder), clock=lambda: now)


def test_a_client_holds_a_request_into_a_window_told_spent_and_never_sends_it(tmp_path: Path) -> None:
    board(tmp_path).post(NOW + 30, NOW)
    request = protocol.build_account(transport="graphql")
    with pytest.raises(DoitongRateLimited) as info:
        client(tmp_path, NOW + 5).hold_if_spent(request)
    assert info.value.status is None and info.value.code == "RATE_LIMITED" and info.value.held
    assert info.value.retry_at == NOW + 30 + RESET_MARGIN
    assert "not sent" in str(info.value) and KEY not in str(info.value)
    seen_next = client(tmp_path, NOW + 5)
    seen_next.last_rate_limit = RateLimitInfo(limit=60, remaining=59, reset_at=NOW + 90, retry_at=None)
    seen_next.hold_if_spent(request)  # its own answer is of the next window already
    client(tmp_path, NOW + 30).hold_if_spent(request)  # reset


def test_a_client_tells_the_board_when_an_answer_shows_the_window_spent(tmp_path: Path) -> None:
    request = protocol.build_account(transport="graphql")
    body = json.dumps({"data": {"account": {"plan": "pro", "credits": 5}}}).encode()
    headers = {"X-RateLimit-Limit": "60", "X-RateLimit-Reset": str(NOW + 30)}
    client(tmp_path, NOW).judge(
        request, status=200, headers={**headers, "X-RateLimit-Remaining": "1"}, content=body
    )
    assert board(tmp_path).spent_until(NOW + 1) is None
    client(tmp_path, NOW).judge(
        request, status=200, headers={**headers, "X-RateLimit-Remaining": "0"}, content=body
    )
    assert board(tmp_path).spent_until(NOW + 1) == NOW + 30
    refused = json.dumps({"errors": [{"message": "slow down", "extensions": {"code": "RATE_LIMITED"}}]})
    with pytest.raises(DoitongRateLimited):
        client(tmp_path, NOW + 31).judge(
            request,
            status=429,
            headers={**headers, "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(NOW + 90)},
            content=refused.encode(),
        )
    assert board(tmp_path).spent_until(NOW + 32) == NOW + 90


def test_a_submission_held_unsent_is_counted_as_held_neither_made_nor_refused(tmp_path: Path) -> None:
    seen = RecordingObserver()
    board(tmp_path).post(NOW + 30, NOW)
    held = DoitongClient(
        api_key=KEY,
        base_url=BASE,
        board=board(tmp_path),
        clock=lambda: NOW + 1,
        observer=seen,
        retry_policy=RetryPolicy(max_rate_limit_wait=0),
    )
    request = ImageRequest(provider="flux-dev", prompt="a kite over the dunes", width=512, height=512)
    with pytest.raises(DoitongRateLimited) as info:
        held.submit(request)
    assert info.value.held and dict(seen.counts) == {(obs.REQUESTS_HELD, None, None): 1}


def test_a_board_file_or_folder_that_is_not_the_users_own_and_private_holds_nothing(tmp_path: Path) -> None:
    one = board(tmp_path / "boards")
    one.post(NOW + 30, NOW)
    one.path.chmod(0o644)  # a file others may read
    assert one.spent_until(NOW + 1) is None
    one.path.chmod(0o600)
    assert one.spent_until(NOW + 1) == NOW + 30
    (tmp_path / "boards").chmod(0o777)  # the folder, opened to others since
    assert one.spent_until(NOW + 1) is None
    one.post(NOW + 90, NOW + 31)
    (tmp_path / "boards").chmod(0o700)
    assert one.spent_until(NOW + 32) is None  # nothing was written into it either


def test_a_rotated_key_has_the_board_of_its_own_account(tmp_path: Path) -> None:
    rotated = client(tmp_path, NOW + 1)
    board(tmp_path, key="sk-live-rotated-0002").post(NOW + 30, NOW)
    request = protocol.build_account(transport="graphql")
    rotated.hold_if_spent(request)  # the old key's board says nothing
    rotated.set_api_key("sk-live-rotated-0002")
    with pytest.raises(DoitongRateLimited):
        rotated.hold_if_spent(request)


def test_a_held_request_waits_for_the_reset_exactly_and_is_no_failed_poll() -> None:
    held = DoitongRateLimited("spent", retry_at=NOW + 7, code="RATE_LIMITED", held=True)
    assert rate_limit_resume_at(held, attempt=5, policy=RetryPolicy(), now=NOW) == NOW + 7
    wait = JobWait(job_id="j", poll_interval=1.0, clock=lambda: NOW)
    step = wait.observe_error(held)
    assert step.sleep == pytest.approx(7.0) and not step.done and wait.failures == 0
    late = JobWait(job_id="j", poll_interval=1.0, deadline=NOW, clock=lambda: NOW).observe_error(held)
    assert late.error is not None and "window was spent" in str(late.error)
