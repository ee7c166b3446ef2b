"""The asset consumer: publishing a day announced by a ``doitong_daily_images`` event.

``dag.test()`` creates a manual run with no triggering asset events, and has no parameter to give
it any. The end-to-end test therefore runs the real batch DAG first (which records a real asset
event), then runs the consumer with ``dag.test()`` while attaching that recorded event to the run
``dag.test()`` creates, as the scheduler does for an asset-triggered run; the task then reads it
through the ordinary ``triggering_asset_events`` context. Publishing itself is the provider's
``publish_folder`` (tests/batch/test_publish.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_dag, task_states, xcom_value
from tests.examples._helpers import load_example


@pytest.fixture
def consumer() -> Any:
    return load_example("doitong_asset_consumer")


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
