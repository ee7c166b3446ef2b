"""``FluxGenerateOperator`` with an image cache, in real Airflow (``dag.test()``) against the emulator."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.client import ImageRequest
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from airflow_provider_doitong.storage.cache import ImageCache, cache_key
from doitong_emulator.images import render_image
from tests.conftest import conn_json, run_dag, task_states, xcom_value

_ids = itertools.count()
PROMPT = "a windmill in the rain"
REQUEST = ImageRequest(provider="flux-krea", prompt=PROMPT, width=256, height=256)


def generate(out: Path, **kwargs: Any) -> dict[str, Any]:
    """One task's result, its image checked against what it says."""
    with DAG(
        f"cache_op_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False
    ) as dag:
        FluxGenerateOperator(
            task_id="generate",
            prompt=PROMPT,
            width=256,
            height=256,
            poll_interval=0.1,
            output_path=f"{out}/",
            **kwargs,
        )
    run = run_dag(dag)
    assert task_states(run) == {"generate": "success"}
    result: dict[str, Any] = xcom_value(run, "generate")
    assert Path(result["output_path"]).parent == out
    return result


def posts(emu: Any) -> int:
    return sum(1 for entry in emu.request_log() if entry["kind"] == "submit")


def digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_second_task_for_the_same_image_takes_it_from_the_cache(
    doitong_conn: Any, tmp_path: Path, deferrable: bool
) -> None:
    cache = str(tmp_path / "cache")
    first = generate(tmp_path / "a", cache_path=cache, deferrable=deferrable)
    assert first["credit_cost"] == 10 and "cached" not in first and posts(doitong_conn) == 1
    credits = doitong_conn.credits()
    second = generate(tmp_path / "b", cache_path=cache, deferrable=deferrable)
    assert posts(doitong_conn) == 1 and doitong_conn.credits() == credits  # nothing submitted
    assert second["cached"] is True and second["credit_cost"] == 0
    assert second["job_id"] == second["source_job_id"] == first["job_id"]
    assert second["output_path"] == str(tmp_path / "b" / f"{first['job_id']}.jpg")
    assert digest(second["output_path"]) == digest(first["output_path"])
    other = generate(tmp_path / "c", cache_path=cache, quality="high")  # another request: a miss
    assert "cached" not in other and posts(doitong_conn) == 2


def test_a_hit_is_not_refused_for_max_credits(doitong_conn: Any, tmp_path: Path) -> None:
    """A hit costs 0 credits: an estimate over ``max_credits`` refuses only a miss."""
    cache = str(tmp_path / "cache")
    first = generate(tmp_path / "a", cache_path=cache)
    second = generate(tmp_path / "b", cache_path=cache, max_credits=5)  # estimated at 10
    assert second["cached"] is True and second["credit_cost"] == 0 and posts(doitong_conn) == 1
    assert second["source_job_id"] == first["job_id"]
    with DAG(
        f"cache_op_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False
    ) as dag:
        FluxGenerateOperator(
            task_id="generate",
            prompt=PROMPT,
            quality="high",
            width=256,
            height=256,
            output_path=f"{tmp_path / 'c'}/",
            cache_path=cache,
            max_credits=5,
        )
    assert task_states(run_dag(dag)) == {"generate": "failed"}  # a miss over max_credits
    assert posts(doitong_conn) == 1


def test_the_connections_cache_path_extra(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DOITONG_DEFAULT", conn_json(emulator, cache_path=str(tmp_path / "cache"))
    )
    first = generate(tmp_path / "a")
    second = generate(tmp_path / "b")
    assert posts(emulator) == 1 and second["cached"] is True and second["job_id"] == first["job_id"]
    assert list((tmp_path / "cache").rglob("*.image"))


def test_a_corrupt_or_symlinked_entry_is_generated_again(doitong_conn: Any, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = generate(tmp_path / "a", cache_path=str(cache))
    key = cache_key(REQUEST)
    image = cache / key[:2] / f"{key}.image"
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF
    image.write_bytes(bytes(data))
    second = generate(tmp_path / "b", cache_path=str(cache))
    assert "cached" not in second and second["job_id"] != first["job_id"] and posts(doitong_conn) == 2
    (tmp_path / "elsewhere.jpg").write_bytes(image.read_bytes())  # the entry second filled, now a link
    image.unlink()
    image.symlink_to(tmp_path / "elsewhere.jpg")
    third = generate(tmp_path / "c", cache_path=str(cache))
    assert "cached" not in third and posts(doitong_conn) == 3
    fourth = generate(tmp_path / "d", cache_path=str(cache), cache_max_age=3600)
    assert fourth["cached"] is True and fourth["job_id"] == third["job_id"]
    fifth = generate(tmp_path / "e", cache_path=str(cache), cache_refresh=True)
    assert "cached" not in fifth and posts(doitong_conn) == 4
    assert json.loads((cache / key[:2] / f"{key}.json").read_text())["job_id"] == fifth["job_id"]


def test_a_task_whose_image_another_is_making_waits_for_it(doitong_conn: Any, tmp_path: Path) -> None:
    """Another task holds the key's claim: this one submits nothing and takes the other's image."""
    cache = ImageCache(str(tmp_path / "cache"))
    assert cache.claim(REQUEST, "another task")
    made = render_image("job-elsewhere", PROMPT, 256, 256)
    maker = threading.Timer(2.0, lambda: cache.fill(REQUEST, data=made, job_id="job-elsewhere", credits=10))
    maker.start()
    try:
        result = generate(tmp_path / "a", cache_path=str(tmp_path / "cache"))
    finally:
        maker.join()
    assert posts(doitong_conn) == 0
    assert result["cached"] is True and result["job_id"] == "job-elsewhere" and result["credit_cost"] == 0
    assert Path(result["output_path"]).read_bytes() == made


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_failed_job_releases_the_claim(doitong_conn: Any, tmp_path: Path, deferrable: bool) -> None:
    """A job that fails (seen in the worker, or by the trigger) leaves no claim: another task may make it."""
    from doitong_emulator import FaultConfig

    doitong_conn.set_faults(FaultConfig(fail_job_rate=1.0, seed=1))
    cache = tmp_path / "cache"
    with DAG(
        f"cache_op_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False
    ) as dag:
        FluxGenerateOperator(
            task_id="generate",
            prompt=PROMPT,
            width=256,
            height=256,
            poll_interval=0.1,
            output_path=f"{tmp_path / 'out'}/",
            cache_path=str(cache),
            deferrable=deferrable,
        )
    run = run_dag(dag)
    assert task_states(run) == {"generate": "failed"} and posts(doitong_conn) == 1
    key = cache_key(REQUEST)
    assert not (cache / key[:2] / f"{key}.claim").exists()


def test_an_image_that_cannot_be_read_back_leaves_the_cache_unfilled_and_the_claim_released(
    tmp_path: Path,
) -> None:
    """The task's image is stored: reading it back to fill the cache failing (here the output has
    turned into a link) is logged, never the task's failure, and the claim is released."""
    from types import SimpleNamespace

    from airflow_provider_doitong.client import Job, JobStatus
    from airflow_provider_doitong.operators import image_cache
    from airflow_provider_doitong.storage import Location

    cache = ImageCache(str(tmp_path / "cache"))
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1)
    context: Any = {"ti": ti}
    assert cache.claim(REQUEST, image_cache.claimant(context))
    (tmp_path / "elsewhere.jpg").write_bytes(render_image("job-1", PROMPT, 256, 256))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "job-1.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    job = Job(id="job-1", status=JobStatus.COMPLETED, raw_status="completed", credit_cost=10)
    image_cache.after_store(cache, REQUEST, job, Location.of(str(tmp_path / "out" / "job-1.jpg")), context)
    assert cache.lookup(REQUEST) is None  # not filled from a link
    assert not list((tmp_path / "cache").rglob("*.claim"))
