"""The image cache's entries (``storage/cache.py``): the key, the record, verification, max_age,
refresh and claims, on a real folder (no server)."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.client.fingerprint import fingerprint
from airflow_provider_doitong.storage.cache import (
    MAX_RECORD_BYTES,
    CacheEntryInvalid,
    ImageCache,
    cache_key,
    make_record,
    parse_record,
)
from doitong_emulator.images import render_image

FOX = ImageRequest(provider="flux-krea", prompt="a fox in the snow", width=256, height=256)
IMAGE = render_image("job-fox", FOX.prompt, 256, 256)


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def entry_files(root: Path, request: ImageRequest = FOX) -> tuple[Path, Path]:
    key = cache_key(request)
    return root / key[:2] / f"{key}.image", root / key[:2] / f"{key}.json"


def filled(tmp_path: Path, **kwargs: Any) -> ImageCache:
    cache = ImageCache(str(tmp_path / "cache"), **kwargs)
    assert cache.fill(FOX, data=IMAGE, job_id="job-fox", credits=10)
    return cache


# --- the key ------------------------------------------------------------------------------------
def test_the_key_is_what_makes_the_image() -> None:
    assert cache_key(FOX) == cache_key(replace(FOX, version=None)) == fingerprint(FOX)
    assert cache_key(FOX) == cache_key(replace(FOX, prompt="  a fox in the snow\n"))
    assert cache_key(FOX) == cache_key(replace(FOX, webhook_url="https://x.example/h"))
    others = [
        {"prompt": "a fox in the snow!"},
        {"width": 512},
        {"height": 512},
        {"quality": "high"},
        {"provider": "flux-dev", "version": "flux-dev"},
    ]
    keys = {cache_key(replace(FOX, **change)) for change in others}
    assert len(keys) == len(others) and cache_key(FOX) not in keys


# --- a hit, and what is a miss ------------------------------------------------------------------
def test_an_entry_filled_is_read_back_verified(tmp_path: Path) -> None:
    cache = filled(tmp_path)
    entry = cache.lookup(FOX)
    assert entry is not None
    assert (entry.data, entry.job_id, entry.credits, entry.model) == (IMAGE, "job-fox", 10, "flux-krea")
    assert ImageCache(str(tmp_path / "cache")).lookup(replace(FOX, width=512)) is None
    image, record = entry_files(tmp_path / "cache")
    assert json.loads(record.read_text())["sha256"] == entry.sha256


@pytest.mark.parametrize(
    "damage",
    ["flipped", "truncated", "image_missing", "record_not_json", "record_huge", "other_model"],
)
def test_a_damaged_entry_is_a_miss_never_a_wrong_image(tmp_path: Path, damage: str) -> None:
    cache = filled(tmp_path)
    image, record = entry_files(tmp_path / "cache")
    if damage == "flipped":
        data = bytearray(IMAGE)
        data[len(data) // 2] ^= 0xFF
        image.write_bytes(bytes(data))
    elif damage == "truncated":
        image.write_bytes(IMAGE[:-100])
    elif damage == "image_missing":
        image.unlink()
    elif damage == "record_not_json":
        record.write_text("{not json")
    elif damage == "record_huge":
        record.write_text(json.dumps({**json.loads(record.read_text()), "pad": "x" * MAX_RECORD_BYTES}))
    else:
        record.write_text(json.dumps({**json.loads(record.read_text()), "model": "flux-dev"}))
    assert cache.lookup(FOX) is None


def test_a_foreign_entry_under_the_key_is_a_miss(tmp_path: Path) -> None:
    """Another request's whole, sound entry copied under this key's names is not taken."""
    cache = ImageCache(str(tmp_path / "cache"))
    tram = ImageRequest(provider="flux-krea", prompt="a tram", width=256, height=256)
    assert cache.fill(tram, data=render_image("job-tram", "a tram", 256, 256), job_id="job-tram", credits=10)
    (tram_image, tram_record), (image, record) = (
        entry_files(tmp_path / "cache", tram),
        entry_files(tmp_path / "cache"),
    )
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(tram_image.read_bytes())
    record.write_bytes(tram_record.read_bytes())
    assert cache.lookup(FOX) is None
    assert cache.lookup(tram) is not None


@pytest.mark.parametrize("which", ["image", "record", "folder"])
def test_a_symlinked_entry_is_a_miss(tmp_path: Path, which: str) -> None:
    cache = filled(tmp_path)
    image, record = entry_files(tmp_path / "cache")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if which == "folder":
        moved = elsewhere / image.parent.name
        image.parent.rename(moved)
        image.parent.symlink_to(moved, target_is_directory=True)
    else:
        target = image if which == "image" else record
        (elsewhere / target.name).write_bytes(target.read_bytes())
        target.unlink()
        target.symlink_to(elsewhere / target.name)
    assert cache.lookup(FOX) is None


@pytest.mark.parametrize(
    "change",
    [
        {"bytes": True},
        {"bytes": -1},
        {"sha256": "ABC"},
        {"job_id": "job\nfox"},
        {"job_id": 7},
        {"created_at": "yesterday"},
        {"credits": -3},
        {"key": "0" * 64},
        {"version": 2},
    ],
)
def test_a_record_with_a_value_no_record_holds_is_refused(change: dict[str, Any]) -> None:
    key = cache_key(FOX)
    raw = make_record(key, data=IMAGE, job_id="job-fox", model="flux-krea", created_at=1.0, credits=10)
    assert parse_record(raw, key=key, model="flux-krea")["job_id"] == "job-fox"
    doc = {**json.loads(raw), **change}
    with pytest.raises(CacheEntryInvalid):
        parse_record(json.dumps(doc).encode(), key=key, model="flux-krea")


# --- max_age and refresh ------------------------------------------------------------------------
def test_max_age_makes_an_older_entry_a_miss(tmp_path: Path) -> None:
    clock = Clock()
    filled(tmp_path, clock=clock)
    clock.now += 3600
    assert ImageCache(str(tmp_path / "cache"), max_age=3601, clock=clock).lookup(FOX) is not None
    assert ImageCache(str(tmp_path / "cache"), max_age=3599, clock=clock).lookup(FOX) is None
    clock.now -= 2 * 3600  # an entry from far in this clock's future is not believed either
    assert ImageCache(str(tmp_path / "cache"), clock=clock).lookup(FOX) is None


def test_refresh_ignores_earlier_entries_and_takes_its_own(tmp_path: Path) -> None:
    clock = Clock()
    filled(tmp_path, clock=clock)
    clock.now += 1
    refreshing = ImageCache(str(tmp_path / "cache"), refresh=True, clock=clock)
    assert refreshing.lookup(FOX) is None
    new = render_image("job-fox-2", FOX.prompt, 256, 256)
    assert refreshing.fill(FOX, data=new, job_id="job-fox-2", credits=10)
    entry = ImageCache(str(tmp_path / "cache")).lookup(FOX)
    assert entry is not None and (entry.job_id, entry.data) == ("job-fox-2", new)


# --- claims -------------------------------------------------------------------------------------
def test_a_claim_is_one_owners_until_released(tmp_path: Path) -> None:
    cache = ImageCache(str(tmp_path / "cache"))
    assert cache.claim(FOX, "run-a")
    assert cache.claim(FOX, "run-a")  # its own, on a retry or a resume
    assert not cache.claim(FOX, "run-b")
    cache.release(FOX, "run-b")  # not its claim: left
    assert not cache.claim(FOX, "run-b")
    cache.release(FOX, "run-a")
    assert cache.claim(FOX, "run-b")


def test_a_stale_claim_is_taken_over_by_one_taker(tmp_path: Path) -> None:
    clock = Clock()
    assert ImageCache(str(tmp_path / "cache"), clock=clock).claim(FOX, "dead-run")
    clock.now += 60
    takers = [ImageCache(str(tmp_path / "cache"), claim_ttl=30, clock=clock) for _ in range(2)]
    assert not ImageCache(str(tmp_path / "cache"), claim_ttl=120, clock=clock).claim(FOX, "run-b")
    assert [takers[0].claim(FOX, "run-b"), takers[1].claim(FOX, "run-c")] == [True, False]
    assert not takers[1].claim(FOX, "run-c")


def test_a_claim_that_cannot_be_read_is_stale(tmp_path: Path) -> None:
    cache = ImageCache(str(tmp_path / "cache"))
    image, _ = entry_files(tmp_path / "cache")
    image.parent.mkdir(parents=True)
    (image.parent / f"{cache_key(FOX)}.claim").write_text("garbage")
    assert cache.claim(FOX, "run-b")


def test_a_waiter_gets_the_image_the_claimant_fills(tmp_path: Path) -> None:
    winner = ImageCache(str(tmp_path / "cache"))
    assert winner.claim(FOX, "run-a")
    got: list[Any] = []
    waiter = threading.Thread(
        target=lambda: got.append(ImageCache(str(tmp_path / "cache")).wait(FOX, "run-b", deadline=None))
    )
    waiter.start()
    winner.fill(FOX, data=IMAGE, job_id="job-fox", credits=10)
    winner.release(FOX, "run-a")
    waiter.join(timeout=60)
    assert got and got[0] is not None and got[0].job_id == "job-fox"


def test_an_image_filled_between_the_look_and_the_claim_is_a_hit(tmp_path: Path) -> None:
    """The claimant fills and releases after the other task's first look missed: that task's
    claim then succeeds, and it must find the image rather than make it again."""
    winner = ImageCache(str(tmp_path / "cache"))
    assert winner.claim(FOX, "run-a")
    late = ImageCache(str(tmp_path / "cache"))
    first_look = late.lookup

    def look_then_finish(request: ImageRequest) -> Any:
        found = first_look(request)
        if found is None and late.lookup is look_then_finish:
            late.lookup = first_look  # type: ignore[method-assign]
            winner.fill(FOX, data=IMAGE, job_id="job-fox", credits=10)
            winner.release(FOX, "run-a")
        return found

    late.lookup = look_then_finish  # type: ignore[method-assign]
    taken = late.take(FOX, "run-b")
    assert taken.entry is not None and taken.entry.job_id == "job-fox"
    assert not taken.claimed
    assert winner.claim(FOX, "run-c")  # run-b gave its claim back


def test_a_waiter_takes_the_claim_the_claimant_gave_up(tmp_path: Path) -> None:
    winner = ImageCache(str(tmp_path / "cache"))
    assert winner.claim(FOX, "run-a")
    winner.release(FOX, "run-a")  # its job failed: nothing filled
    waiter = ImageCache(str(tmp_path / "cache"))
    assert waiter.wait(FOX, "run-b", deadline=None) is None
    assert not winner.claim(FOX, "run-a")  # run-b makes it now


def test_an_unwritable_cache_does_not_fail_the_fill(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("a file, not a folder")
    assert not ImageCache(str(tmp_path / "cache")).fill(FOX, data=IMAGE, job_id="job-fox", credits=10)
    assert os.path.isfile(tmp_path / "cache")


# --- max_credits and a hit (the single image's check before its first credit) -------------------
def test_max_credits_counts_an_image_the_cache_holds_at_0(tmp_path: Path) -> None:
    from airflow_provider_doitong.operators.image_cache import max_credits_problem

    empty = ImageCache(str(tmp_path / "empty"))
    refused = "This image is estimated at 10 credits, over max_credits=5; nothing was submitted"
    assert max_credits_problem(empty, FOX, 5) == refused
    assert max_credits_problem(None, FOX, 5) == refused
    assert max_credits_problem(empty, FOX, 10) is None and max_credits_problem(empty, FOX, None) is None
    cache = filled(tmp_path)
    assert max_credits_problem(cache, FOX, 0) is None  # a hit costs nothing
    assert not list((tmp_path / "cache").rglob("*.claim"))  # looked at, not claimed
    image, _ = entry_files(tmp_path / "cache")
    image.write_bytes(IMAGE[:-10])  # a damaged entry is a miss: refused as before
    assert max_credits_problem(cache, FOX, 5) == refused
