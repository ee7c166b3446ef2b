"""``FluxBatchOperator`` with an image cache, in real Airflow (``dag.test()``) against the emulator;
two batches racing for the same keys run by the Airflow-free runner in two threads."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.batch.cache import BatchCache
from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.manifest import iter_entries_from_ledger
from airflow_provider_doitong.batch.planner import Limits, Planner
from airflow_provider_doitong.batch.runner import BatchRunner, Finished
from airflow_provider_doitong.batch.stores import LocalLedgerStore
from airflow_provider_doitong.client import DoitongClient
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.storage import storage_path
from airflow_provider_doitong.storage.cache import ImageCache, cache_key
from doitong_emulator import FaultConfig
from doitong_emulator.images import render_image
from tests.conftest import run_dag, task_states, xcom_value
from tests.support.threads import run_together

PROMPTS = [f"a harbour at noon, study {n}" for n in range(6)]


def batch_dag(dag_id: str, **kwargs: Any) -> DAG:
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False) as dag:
        FluxBatchOperator(task_id="batch", **{"width": 256, "height": 256, "poll_interval": 0.2, **kwargs})
    return dag


def run_batch(dag_id: str, out: Path, cache: Path, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """One batch of :data:`PROMPTS`: its manifest and its XCom summary."""
    run = run_dag(batch_dag(dag_id, prompts=PROMPTS, output_path=str(out), cache_path=str(cache), **kwargs))
    assert task_states(run) == {"batch": "success"}
    return json.loads((out / "manifest.json").read_text()), xcom_value(run, "batch")


def posts(emu: Any) -> int:
    return sum(1 for entry in emu.request_log() if entry["kind"] == "submit")


def check_images(out: Path, manifest: dict[str, Any], emu: Any) -> None:
    """Every image is the one its job id's job made (the emulator's image names its job)."""
    for entry in manifest["items"]:
        data = (out / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert emu.job(entry["job_id"])["status"] == "completed"


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_second_batch_of_the_same_prompts_takes_every_image_from_the_cache(
    doitong_conn: Any, tmp_path: Path, deferrable: bool
) -> None:
    first, summary = run_batch(f"cache_a_{deferrable}", tmp_path / "a", tmp_path / "cache")
    assert summary["credits_spent"] == 10 * len(PROMPTS) and posts(doitong_conn) == len(PROMPTS)
    assert not any(entry.get("cached") for entry in first["items"])
    credits = doitong_conn.credits()
    second, summary = run_batch(
        f"cache_b_{deferrable}",
        tmp_path / "b",
        tmp_path / "cache",
        deferrable=deferrable,
        min_defer_seconds=0,
    )
    assert posts(doitong_conn) == len(PROMPTS) and doitong_conn.credits() == credits  # no new job
    assert summary["credits_spent"] == second["credits_spent"] == 0 and summary["stored"] == len(PROMPTS)
    for old, new in zip(first["items"], second["items"], strict=True):
        assert new["cached"] is True and new["credits"] == 0 and new["status"] == "stored"
        assert new["job_id"] == new["source_job_id"] == old["job_id"]
        assert new["sha256"] == old["sha256"] and new["file"] == old["file"]
    check_images(tmp_path / "b", second, doitong_conn)


def test_a_damaged_symlinked_or_foreign_entry_is_made_again(doitong_conn: Any, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, _ = run_batch("cache_damage_a", tmp_path / "a", cache)
    keys = [cache_key(ImageRequest_of(prompt)) for prompt in PROMPTS]
    image = [cache / key[:2] / f"{key}.image" for key in keys]
    record = [cache / key[:2] / f"{key}.json" for key in keys]
    image[0].write_bytes(image[0].read_bytes()[:-50])  # truncated
    (tmp_path / "elsewhere").write_bytes(image[1].read_bytes())
    image[1].unlink()
    image[1].symlink_to(tmp_path / "elsewhere")  # a link
    image[2].write_bytes(image[3].read_bytes())  # another key's entry, whole and sound
    record[2].write_bytes(record[3].read_bytes())
    second, summary = run_batch("cache_damage_b", tmp_path / "b", cache)
    assert doitong_conn.stats()["submissions_by_prompt"] == {
        prompt: 2 if n < 3 else 1 for n, prompt in enumerate(PROMPTS)
    }
    assert [bool(entry.get("cached")) for entry in second["items"]] == [False] * 3 + [True] * 3
    assert summary["credits_spent"] == 30
    for n in range(3):
        assert second["items"][n]["job_id"] != first["items"][n]["job_id"]
    check_images(tmp_path / "b", second, doitong_conn)
    third, summary = run_batch("cache_damage_c", tmp_path / "c", cache)  # made again, filled again
    assert summary["credits_spent"] == 0 and all(entry["cached"] for entry in third["items"])
    assert [e["job_id"] for e in third["items"][:3]] == [e["job_id"] for e in second["items"][:3]]


def test_max_age_and_refresh_make_the_images_again(doitong_conn: Any, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, _ = run_batch("cache_age_a", tmp_path / "a", cache)
    aged, summary = run_batch("cache_age_b", tmp_path / "b", cache, cache_max_age=0.001)
    assert summary["credits_spent"] == 60 and posts(doitong_conn) == 2 * len(PROMPTS)
    kept, summary = run_batch("cache_age_c", tmp_path / "c", cache, cache_max_age=3600)
    assert summary["credits_spent"] == 0
    assert [e["job_id"] for e in kept["items"]] == [e["job_id"] for e in aged["items"]]
    fresh, summary = run_batch("cache_age_d", tmp_path / "d", cache, cache_refresh=True)
    assert summary["credits_spent"] == 60 and posts(doitong_conn) == 3 * len(PROMPTS)
    assert not any(entry.get("cached") for entry in fresh["items"])
    after, summary = run_batch("cache_age_e", tmp_path / "e", cache)
    assert summary["credits_spent"] == 0
    assert [e["job_id"] for e in after["items"]] == [e["job_id"] for e in fresh["items"]]


def ImageRequest_of(prompt: str) -> Any:  # noqa: N802 (reads as the request it builds)
    items = build_items(entries_from_list([prompt]), ItemDefaults(width=256, height=256))[0]
    return items[0].request


def runner_for(emu: Any, tmp_path: Path, name: str, prompts: list[str]) -> BatchRunner:
    """A batch as the operator runs it, without Airflow: its own ledger, output folder and client."""
    items = build_items(entries_from_list(prompts), ItemDefaults(width=256, height=256))[0]
    owner = {"dag_id": name, "run_id": "r", "task_id": "t", "map_index": -1}
    ledger = Ledger.open(LocalLedgerStore(str(tmp_path / name / "ledger")), items=items, owner=owner)
    folder = storage_path(str(tmp_path / name / "out"))
    client = DoitongClient(base_url=emu.base_url, api_key=emu.api_key)
    log = logging.getLogger(f"batch.{name}")
    cache = BatchCache(
        cache=ImageCache(str(tmp_path / "cache")),
        items=items,
        ledger=ledger,
        folder=folder,
        owner=name,
        log=log,
    )
    planner = Planner(limits=Limits(concurrency=5, requests_per_window=60, window_s=60.0), poll_interval=0.2)
    return BatchRunner(
        items=items,
        ledger=ledger,
        client=client,
        planner=planner,
        folder=folder,
        item_retries=1,
        max_failed_items=0,
        logger=log,
        cache=cache,
    )


def test_two_batches_of_the_same_prompts_at_once_make_each_image_once(
    doitong_conn: Any, tmp_path: Path
) -> None:
    prompts = [f"a market at dusk, study {n}" for n in range(12)]
    runners = [runner_for(doitong_conn, tmp_path, name, prompts) for name in ("one", "two")]
    outcomes = run_together(runners)
    assert outcomes == [Finished(""), Finished("")]
    assert doitong_conn.stats()["submissions_by_prompt"] == {prompt: 1 for prompt in prompts}
    for runner in runners:
        runner.client.close()
        assert runner.ledger.count(ItemState.STORED) == len(prompts)
    one, two = (runner.ledger.records for runner in runners)
    for a, b in zip(one, two, strict=True):
        assert a.job_id == b.job_id and a.sha256 == b.sha256  # the same image, paid for once
        assert bool(a.job_ids) != bool(b.job_ids)  # by one of the two; the other took it from the cache
    assert not list((tmp_path / "cache").rglob("*.claim"))  # every claim released


def test_two_batches_each_making_half_of_the_others_images_wait_for_nothing_they_hold(
    doitong_conn: Any, tmp_path: Path
) -> None:
    """Each batch holds the claims of half the keys: each makes its half first, then takes the
    other's half from the cache; neither waits on the other while it holds an unfilled claim."""
    prompts = [f"a bridge in fog, study {n}" for n in range(8)]
    runners = [runner_for(doitong_conn, tmp_path, name, prompts) for name in ("one", "two")]
    cache = ImageCache(str(tmp_path / "cache"))
    for n, prompt in enumerate(prompts):
        assert cache.claim(ImageRequest_of(prompt), "one" if n % 2 else "two")
    outcomes = run_together(runners)
    assert outcomes == [Finished(""), Finished("")]
    assert doitong_conn.stats()["submissions_by_prompt"] == {prompt: 1 for prompt in prompts}
    one, two = (runner.ledger.records for runner in runners)
    assert [bool(record.job_ids) for record in one] == [n % 2 == 1 for n in range(len(prompts))]
    assert [bool(record.job_ids) for record in two] == [n % 2 == 0 for n in range(len(prompts))]
    for a, b in zip(one, two, strict=True):
        assert a.job_id == b.job_id and a.sha256 == b.sha256
    for runner in runners:
        runner.client.close()


def test_a_batch_that_waited_for_another_runs_image_releases_its_failed_items_claims(
    doitong_conn: Any, tmp_path: Path
) -> None:
    """An item held for another run and an item that failed for good: once the held one is taken
    from the cache, the failed one's claim is released, so that another run may make it."""
    from doitong_emulator import FaultConfig
    from doitong_emulator.images import render_image

    held, doomed = "a lighthouse, held", "a lighthouse, doomed"
    runner = runner_for(doitong_conn, tmp_path, "one", [held, doomed])
    runner.item_retries, runner.max_failed_items = 0, 1
    cache = ImageCache(str(tmp_path / "cache"))
    assert cache.claim(ImageRequest_of(held), "other")
    doitong_conn.set_faults(FaultConfig(fail_job_rate=1.0, seed=1))
    assert runner.cache is not None
    waiting = runner.cache.cache

    def other_run_fills(_seconds: float) -> None:  # the other run's image arrives while this one waits
        image = render_image("job-other", held, 256, 256)
        cache.fill(ImageRequest_of(held), data=image, job_id="job-other", credits=10)
        cache.release(ImageRequest_of(held), "other")

    waiting.sleep = other_run_fills
    assert runner.run() == Finished("")
    runner.client.close()
    states = [record.state for record in runner.ledger.records]
    assert states == [ItemState.STORED, ItemState.FAILED]
    assert runner.ledger.records[0].job_id == "job-other"
    assert not list((tmp_path / "cache").rglob("*.claim"))  # the failed item's claim too


@pytest.mark.parametrize(
    ("limit", "refusal"),
    [
        ({"max_credits": 0}, "1 images are estimated at 10 credits, over max_credits=0"),
        ({"credit_floor": 100_000 - 10 * len(PROMPTS)}, "still to generate are estimated at 10 credits"),
    ],
    ids=["max_credits", "credit_floor"],
)
def test_a_batch_the_cache_holds_whole_is_not_refused_for_its_estimate(
    doitong_conn: Any, tmp_path: Path, capfd: Any, limit: dict[str, int], refusal: str
) -> None:
    """Its images cost 0: neither ``max_credits`` nor the balance's floor counts them at their estimate."""
    run_batch("cache_limit_a", tmp_path / "a", tmp_path / "cache")
    assert doitong_conn.credits() == 100_000 - 10 * len(
        PROMPTS
    )  # a floor at the balance: not a credit to spend
    second, summary = run_batch("cache_limit_b", tmp_path / "b", tmp_path / "cache", **limit)
    assert summary["credits_spent"] == 0 and all(entry["cached"] for entry in second["items"])
    assert posts(doitong_conn) == len(PROMPTS)
    run = run_dag(  # one prompt the cache does not hold: refused as before, nothing submitted
        batch_dag(
            "cache_limit_c",
            prompts=[*PROMPTS, "a harbour at night"],
            output_path=str(tmp_path / "c"),
            cache_path=str(tmp_path / "cache"),
            **limit,
        )
    )
    assert task_states(run) == {"batch": "failed"} and posts(doitong_conn) == len(PROMPTS)
    assert refusal in capfd.readouterr().out  # what is still to make, the hits at 0
    assert not list((tmp_path / "cache").rglob("*.claim"))  # the look claimed nothing


def test_an_item_failed_in_an_earlier_try_then_taken_from_the_cache_is_marked_cached(
    doitong_conn: Any, tmp_path: Path
) -> None:
    prompt = "a lantern in the snow"
    first = runner_for(doitong_conn, tmp_path, "one", [prompt])
    first.item_retries, first.max_failed_items = 0, 1
    first.start_try(try_number=1, deadline=None)
    doitong_conn.set_faults(FaultConfig(fail_job_rate=1.0, seed=1))
    assert first.run() == Finished("")
    first.client.close()
    failed_job = first.ledger.records[0].job_ids[0]
    doitong_conn.set_faults(FaultConfig())
    image = render_image("job-other", prompt, 256, 256)  # another run makes the image meanwhile
    ImageCache(str(tmp_path / "cache")).fill(
        ImageRequest_of(prompt), data=image, job_id="job-other", credits=10
    )
    second = runner_for(doitong_conn, tmp_path, "one", [prompt])  # the task's next try
    assert second.start_try(try_number=2, deadline=None) == 1
    assert second.run() == Finished("")
    second.client.close()
    reopened = runner_for(doitong_conn, tmp_path, "one", [prompt])  # as the ledger was written
    reopened.client.close()
    (entry,) = iter_entries_from_ledger(reopened.items, reopened.ledger.records)
    assert entry["cached"] is True and entry["source_job_id"] == entry["job_id"] == "job-other"
    assert entry["credits"] == 0 and posts(doitong_conn) == 1
    record = reopened.ledger.records[0]
    assert record.state is ItemState.STORED and record.cached and record.job_ids == [failed_job]


def test_an_item_failing_in_the_final_drain_gives_its_claim_back(doitong_conn: Any, tmp_path: Path) -> None:
    """The try's deadline passes while the image downloads; the download then fails for good."""
    runner = runner_for(doitong_conn, tmp_path, "one", ["a kite over dunes"])
    # an output on a host the connection does not list: refused for good, never stored
    doitong_conn.set_faults(FaultConfig(output_base_url=f"http://localhost:{doitong_conn.port}"))
    download = runner.client.download

    def slow_download(url: str, **kwargs: Any) -> Any:
        time.sleep(0.5)  # still in flight when the loop ends
        return download(url, **kwargs)

    runner.client.download = slow_download  # type: ignore[method-assign]
    poll = runner.poll

    def poll_then_deadline() -> None:
        poll()
        if runner.ledger.count(ItemState.COMPLETED):
            runner.planner.deadline = 1.0  # passed: the loop ends with the download in flight

    runner.poll = poll_then_deadline  # type: ignore[method-assign]
    assert runner.run() == Finished("deadline")
    runner.client.close()
    assert runner.ledger.records[0].state is ItemState.FAILED  # in the drain
    assert not list((tmp_path / "cache").rglob("*.claim"))


def test_a_run_ended_by_an_error_gives_back_the_claims_of_what_it_did_not_submit(
    doitong_conn: Any, tmp_path: Path
) -> None:
    prompts = [f"a crane at dawn, study {n}" for n in range(7)]
    runner = runner_for(doitong_conn, tmp_path, "one", prompts)  # 5 jobs at once

    def lost() -> None:
        raise RuntimeError("the worker was lost")

    runner.poll = lost  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="worker was lost"):
        runner.run()
    runner.client.close()
    assert runner.ledger.count(ItemState.RUNNING) == 5 and runner.ledger.count(ItemState.PENDING) == 2
    claims = list((tmp_path / "cache").rglob("*.claim"))
    assert len(claims) == 5  # the running jobs' stay: the next try stores their images


def test_a_run_stopped_between_storing_and_filling_fills_the_cache_when_it_resumes(
    doitong_conn: Any, tmp_path: Path
) -> None:
    prompts = [f"a pier in rain, study {n}" for n in range(3)]
    first = runner_for(doitong_conn, tmp_path, "one", prompts)
    assert first.cache is not None

    def killed(_candidates: Any) -> None:
        raise RuntimeError("killed after the ledger's flush")

    first.cache.stored = killed  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="killed"):
        first.run()
    first.client.close()
    cache = ImageCache(str(tmp_path / "cache"))
    stored = first.ledger.in_state(ItemState.STORED)
    assert stored and all(cache.lookup(ImageRequest_of(prompts[i])) is None for i in stored)
    assert len(list((tmp_path / "cache").rglob("*.claim"))) == len(prompts)
    second = runner_for(doitong_conn, tmp_path, "one", prompts)  # the resume, or the next try
    assert second.run() == Finished("")
    second.client.close()
    assert posts(doitong_conn) == len(prompts)  # nothing made again
    for prompt, record in zip(prompts, second.ledger.records, strict=True):
        entry = cache.lookup(ImageRequest_of(prompt))
        assert entry is not None and entry.job_id == record.job_id and entry.sha256 == record.sha256
    assert not list((tmp_path / "cache").rglob("*.claim"))
