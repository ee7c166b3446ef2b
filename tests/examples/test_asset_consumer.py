"""The asset consumer: publishing a day announced by a ``doitong_daily_images`` event.

``dag.test()`` creates a manual run with no triggering asset events, and has no parameter to give
it any. The end-to-end test therefore runs the real batch DAG first (which records a real asset
event), then runs the consumer with ``dag.test()`` while attaching that recorded event to the run
``dag.test()`` creates, as the scheduler does for an asset-triggered run; the task then reads it
through the ordinary ``triggering_asset_events`` context. ``publish_day`` is also tested directly
with a realistic extra.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_doitong.batch import manifest as manifest_api
from doitong_emulator.images import render_jpeg
from tests.conftest import run_dag, task_states, xcom_value
from tests.examples._helpers import load_example


@pytest.fixture
def consumer() -> Any:
    return load_example("doitong_asset_consumer")


def make_day(tmp_path: Path, day: str = "2025-03-04") -> dict[str, Any]:
    """A day's folder as a batch writes it (the manifest API on two images), and its event's extra."""
    folder = tmp_path / "images" / day
    folder.mkdir(parents=True)
    results = []
    for n, prompt in enumerate(["a fox in the snow", "a lighthouse at dawn"]):
        job_id = f"job{n}"
        (folder / f"{job_id}.jpg").write_bytes(render_jpeg(job_id, prompt, 256, 256))
        results.append(
            {
                "job_id": job_id,
                "prompt": prompt,
                "credit_cost": 10,
                "width": 256,
                "height": 256,
                "output_path": str(folder / f"{job_id}.jpg"),
                "provider": "flux-krea",
            }
        )
    entries = manifest_api.entries_from_results(results, folder=str(folder))
    paths = manifest_api.write_manifest(
        str(folder), manifest_api.build_manifest(entries, title=day, credits_estimated=20)
    )
    return {**paths, "items": 2, "stored": 2, "failed": 0, "credits_spent": 20, "credits_estimated": 20}


def test_publish_day_copies_and_records(consumer: Any, tmp_path: Path) -> None:
    extra = make_day(tmp_path)
    record = consumer.publish_day(extra, source={"dag_id": "doitong_daily_prompt_batch", "run_id": "r1"})
    target = tmp_path / "images" / "published" / "2025-03-04"
    assert record["folder"] == str(target)
    assert sorted(p.name for p in target.iterdir()) == [
        "index.html",
        "job0.jpg",
        "job1.jpg",
        "manifest.json",
        "publication.json",
    ]
    for name in ("job0.jpg", "job1.jpg", "manifest.json", "index.html"):
        assert (target / name).read_bytes() == (Path(extra["folder"]) / name).read_bytes()
    written = json.loads((target / "publication.json").read_text())
    assert written == record
    assert record["image_count"] == 2 and record["credits_spent"] == 20
    assert record["source"] == {"dag_id": "doitong_daily_prompt_batch", "run_id": "r1"}

    again = consumer.publish_day(extra, published_root=str(tmp_path / "site"))
    assert again["folder"] == str(tmp_path / "site" / "2025-03-04")


def test_publish_day_refuses_altered_or_missing_images(consumer: Any, tmp_path: Path) -> None:
    extra = make_day(tmp_path)
    image = Path(extra["folder"]) / "job1.jpg"
    image.write_bytes(image.read_bytes() + b"tampered")
    with pytest.raises(
        AirflowFailException, match=r"images of 2025-03-04 do not match.*job1\.jpg does not match"
    ):
        consumer.publish_day(extra)
    image.unlink()
    with pytest.raises(
        AirflowFailException, match=r"images of 2025-03-04 do not match.*job1\.jpg is missing"
    ):
        consumer.publish_day(extra)
    assert not (tmp_path / "images" / "published").exists()
    with pytest.raises(AirflowFailException, match="lacks the folder"):
        consumer.publish_day({"manifest": extra["manifest"]})
    (Path(extra["folder"]) / "manifest.json").unlink()
    with pytest.raises(AirflowFailException, match="holds no manifest.json"):
        consumer.publish_day(extra)


@pytest.mark.integration
def test_without_triggering_events_there_is_nothing_to_publish(consumer: Any, capfd: Any) -> None:
    run = run_dag(consumer.dag)
    assert task_states(run) == {"publish": "skipped"}
    assert "No doitong_daily_images events triggered this run" in capfd.readouterr().out


def test_the_batch_event_triggers_publication(
    consumer: Any, doitong_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow.models.dagrun as dagrun_module
    from airflow.models.asset import AssetEvent, AssetModel
    from sqlalchemy import select

    monkeypatch.setenv("DOITONG_OUTPUT_ROOTS", str(tmp_path))
    batch = load_example("doitong_daily_prompt_batch")
    produced = run_dag(
        batch.dag,
        run_conf={"prompts_file": ["a fox in the snow", "a lighthouse at dawn"], "poll_interval": 0.1},
    )
    assert set(task_states(produced).values()) == {"success"}
    extra = xcom_value(produced, "generate")

    original = dagrun_module.get_or_create_dagrun

    def with_triggering_event(**kwargs: Any) -> Any:
        dag_run = original(**kwargs)
        session = kwargs["session"]
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == "doitong_daily_images", AssetEvent.source_run_id == produced.run_id)
        ).all()
        assert len(events) == 1
        dag_run.consumed_asset_events.extend(events)
        session.commit()
        return dag_run

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", with_triggering_event)
    run = run_dag(consumer.dag)

    assert task_states(run) == {"publish": "success"}
    [record] = xcom_value(run, "publish")
    target = tmp_path / "published" / Path(extra["folder"]).name
    assert record["folder"] == str(target) and record["image_count"] == 2
    assert record["source"]["dag_id"] == "doitong_daily_prompt_batch"
    assert record["source"]["run_id"] == produced.run_id
    manifest = json.loads((target / "manifest.json").read_text())
    for image in manifest["items"]:
        assert hashlib.sha256((target / image["file"]).read_bytes()).hexdigest() == image["sha256"]
    assert (target / "index.html").exists() and (target / "publication.json").exists()
