"""OpenLineage: the names lineage gives, the facets it builds, and the events a real run emits.

The end-to-end test runs ``dag.test()`` in a fresh process with the OpenLineage provider's file
transport on, and reads the START/COMPLETE/FAIL events it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.operators import lineage
from airflow_provider_doitong.operators.lineage import DatasetRef, DoitongRun
from airflow_provider_doitong.storage import Location
from doitong_emulator import DoitongEmulator, FaultConfig
from doitong_emulator.pytest_plugin import EmulatorFactory
from tests.conftest import REPO, conn_json

RESULT = {
    "job_id": "job-1",
    "status": "completed",
    "provider": "flux-krea",
    "width": 512,
    "height": 768,
    "credit_cost": 20,
    "output_path": "/data/images/job-1.jpg",
}


# --- pure: names and the facet's content ---------------------------------------------------------
@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/data/images/a.jpg", DatasetRef("file", "/data/images/a.jpg")),
        ("file:///data/images/a.jpg", DatasetRef("file", "/data/images/a.jpg")),
        ("/data/images/2025-01-01/", DatasetRef("file", "/data/images/2025-01-01")),
        ("s3://bucket/day/a.jpg", DatasetRef("s3://bucket", "day/a.jpg")),
        ("gs://bucket/day/", DatasetRef("gs://bucket", "day")),
        ("s3://key-id:s3cr3t@bucket/day/a.jpg", DatasetRef("s3://bucket", "day/a.jpg")),
    ],
)
def test_dataset_names_follow_the_openlineage_conventions(location: str, expected: DatasetRef) -> None:
    assert lineage.dataset_for(location) == expected


def test_a_location_parsed_once_is_named_as_its_text_is(tmp_path: Path) -> None:
    for text in (f"{tmp_path}/out/", "s3://bucket/day/a.jpg"):
        assert lineage.dataset_for(Location.of(text)) == lineage.dataset_for(text)


def test_what_a_batch_keeps_for_lineage_crosses_a_deferral_unchanged() -> None:
    kept = lineage.BatchIO(
        folder="s3://b/day", manifest="s3://b/day/manifest.json", job_ids=("a", "b"), credits=20, images=2
    )
    assert lineage.BatchIO.from_json(json.loads(json.dumps(kept.to_json()))) == kept
    assert lineage.BatchIO.from_json({"folder": 3, "job_ids": "a", "images": "x"}) == lineage.BatchIO()


def test_a_relative_path_is_named_absolutely(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert lineage.dataset_for("out/a.jpg") == DatasetRef("file", str(tmp_path / "out" / "a.jpg"))


def test_image_lineage_of_a_stored_image() -> None:
    got = lineage.image_lineage(
        result=RESULT,
        job_ids=["job-1"],
        model="flux-krea",
        width="{{ params.w }}",
        height=None,
        quality="high",
        prompt_file="/dags/prompts/hero.txt",
    )
    assert got.inputs == (DatasetRef("file", "/dags/prompts/hero.txt"),)
    assert got.outputs == (DatasetRef("file", "/data/images/job-1.jpg"),)
    assert got.run == DoitongRun(
        model="flux-krea", width=512, height=768, quality="high", job_ids=("job-1",), credits=20, images=1
    )


def test_image_lineage_of_a_failure_names_the_job_but_no_output_or_charge() -> None:
    got = lineage.image_lineage(
        result=None, job_ids=["job-9"], model="flux-dev", width=1024, height="1024", quality="standard"
    )
    assert got.inputs == () and got.outputs == ()
    assert got.run == DoitongRun(
        model="flux-dev", width=1024, height=1024, quality="standard", job_ids=("job-9",), credits=None
    )


def test_image_lineage_without_storage_has_no_output() -> None:
    got = lineage.image_lineage(
        result={**RESULT, "output_path": None},
        job_ids=[],
        model="flux-krea",
        width=512,
        height=768,
        quality="high",
    )
    assert got.outputs == () and got.run is not None and got.run.images == 0
    assert got.run.job_ids == ("job-1",) and got.run.credits == 20


def test_batch_lineage_names_the_folder_the_manifest_and_the_prompts_file() -> None:
    got = lineage.batch_lineage(
        folder="s3://images/2025-01-01/",
        manifest="s3://images/2025-01-01/manifest.json",
        prompts_file="/dags/prompts/daily_prompts.txt",
        model="flux-krea",
        width=1024,
        height=1024,
        quality="standard",
        job_ids=["a", "b", "a"],
        credits=20,
        images=2,
    )
    assert got.inputs == (DatasetRef("file", "/dags/prompts/daily_prompts.txt"),)
    assert got.outputs == (
        DatasetRef("s3://images", "2025-01-01"),
        DatasetRef("s3://images", "2025-01-01/manifest.json"),
    )
    assert got.run is not None and got.run.job_ids == ("a", "b") and got.run.images == 2


def test_batch_lineage_of_prompts_given_in_the_conf_has_no_input() -> None:
    got = lineage.batch_lineage(
        folder="/out/day",
        manifest=None,
        prompts_file=None,
        model="flux-dev",
        width=None,
        height=None,
        quality=None,
    )
    assert got.inputs == () and got.outputs == (DatasetRef("file", "/out/day"),)


def test_openlineage_objects_serialise_with_the_doitong_facet() -> None:
    from openlineage.client.serde import Serde

    batch = lineage.to_operator_lineage(
        lineage.batch_lineage(
            folder="/out/day",
            manifest="/out/day/manifest.json",
            prompts_file="/p.txt",
            model="flux-krea",
            width=1024,
            height=1024,
            quality="standard",
            job_ids=["a", "b"],
            credits=20,
            images=2,
        )
    )
    assert [(d.namespace, d.name) for d in batch.outputs] == [
        ("file", "/out/day"),
        ("file", "/out/day/manifest.json"),
    ]
    assert [(d.namespace, d.name) for d in batch.inputs] == [("file", "/p.txt")]
    facet = json.loads(Serde.to_json(batch.run_facets["doitong"]))
    assert facet["_producer"] and facet["_schemaURL"].startswith("https://")
    assert {key: facet[key] for key in ("model", "width", "height", "quality", "jobIds", "credits")} == {
        "model": "flux-krea",
        "width": 1024,
        "height": 1024,
        "quality": "standard",
        "jobIds": ["a", "b"],
        "credits": 20,
    }


@pytest.mark.integration
def test_the_provider_imports_no_openlineage() -> None:
    # Airflow itself reads every installed provider's get_provider_info; nothing else may be loaded.
    code = (
        "import sys, airflow_provider_doitong.operators.flux, airflow_provider_doitong.operators.lineage\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'openlineage'\n"
        "          or m.startswith('airflow.providers.openlineage.') and not m.endswith('.get_provider_info')]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )
    assert done.returncode == 0, done.stderr[-2000:]


# --- a real run, with the OpenLineage provider's file transport ---------------------------------
@pytest.fixture
def failing_emulator(doitong_emulators: EmulatorFactory) -> Iterator[DoitongEmulator]:
    with doitong_emulators(plan="pro", time_scale=0.02, job_seconds=5, credits=1_000) as emu:
        emu.set_faults(FaultConfig(fail_job_rate=1.0))
        yield emu


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _task_event(events: list[dict[str, Any]], dag_id: str, event_type: str) -> dict[str, Any]:
    found = [
        e for e in events if e["job"]["name"] == f"{dag_id}.generate" and e.get("eventType") == event_type
    ]
    assert len(found) == 1, [(e["job"]["name"], e.get("eventType")) for e in events]
    return found[0]


def test_a_run_reports_the_stored_image_and_the_prompt_file(
    emulator: DoitongEmulator, failing_emulator: DoitongEmulator, airflow_home: Path, tmp_path: Path
) -> None:
    (tmp_path / "hero.txt").write_text("a lighthouse in a storm, {{ dag.dag_id }}")
    events_file = tmp_path / "openlineage.jsonl"
    env = {
        **os.environ,
        "DOITONG_TEST_AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW_CONN_DOITONG_LINEAGE": conn_json(emulator),
        "AIRFLOW_CONN_DOITONG_FAILING": conn_json(failing_emulator),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "doitong-tests",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.operators._openlineage_run", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads((tmp_path / "runs.json").read_text())
    good = runs["doitong_lineage_succeeds"]
    assert good["states"] == {"generate": "success"}, done.stderr[-3000:]
    result = good["result"]
    events = _events(events_file)

    complete = _task_event(events, "doitong_lineage_succeeds", "COMPLETE")
    assert complete["outputs"] == [{"namespace": "file", "name": result["output_path"], "facets": {}}]
    assert Path(result["output_path"]).is_file()
    assert complete["inputs"] == [{"namespace": "file", "name": str(tmp_path / "hero.txt"), "facets": {}}]
    facet = complete["run"]["facets"]["doitong"]
    assert {key: facet[key] for key in ("model", "width", "height", "quality", "jobIds", "credits")} == {
        "model": "flux-krea",
        "width": 512,
        "height": 768,
        "quality": "high",
        "jobIds": [result["job_id"]],
        "credits": 20,
    }
    assert (
        emulator.job(result["job_id"])["metadata"]["prompt"]
        == "a lighthouse in a storm, {{ dag.dag_id }}"  # a prompt file is data, never a template
    )

    bad = runs["doitong_lineage_fails"]
    assert bad["states"] == {"generate": "failed"} and bad["result"] is None
    fail = _task_event(events, "doitong_lineage_fails", "FAIL")
    assert fail["outputs"] == [] and fail["inputs"] == []
    facet = fail["run"]["facets"]["doitong"]
    assert "credits" not in facet  # unknown: OpenLineage drops null fields
    assert facet["model"] == "flux-krea" and len(facet["jobIds"]) == 1
    assert failing_emulator.job(facet["jobIds"][0])["status"] == "failed"
