"""``FluxBatchOperator`` with an image cache, in real Airflow (``dag.test()``) against the emulator;
two batches racing for the same keys run by the Airflow-free runner in two threads."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.batch.cache import BatchCache
from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.planner import Limits, Planner
from airflow_provider_doitong.batch.runner import BatchRunner, Finished
from airflow_provider_doitong.batch.stores import LocalLedgerStore
from airflow_provider_doitong.client import DoitongClient
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.storage import storage_path
from airflow_provider_doitong.storage.cache import ImageCache, cache_key
from tests.conftest import run_dag, task_states, xcom_value

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
    outcomes: list[Any] = []
    threads = [threading.Thread(target=lambda r=r: outcomes.append(r.run())) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
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
    outcomes: list[Any] = []
    threads = [threading.Thread(target=lambda r=r: outcomes.append(r.run())) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
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
