"""The mapped example: one ``FluxGenerateOperator`` task per image, then the provider's manifest API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.batch.manifest import verify_manifest
from tests.conftest import run_dag, task_states, xcom_value
from tests.examples._helpers import load_example


def test_mapped_results_get_the_same_manifest_and_contact_sheet(
    doitong_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOITONG_OUTPUT_ROOTS", str(tmp_path))
    example = load_example("doitong_mapped_batch")
    prompts = ["a fox in the snow", "a lighthouse at dawn", "a paper boat"]
    run = run_dag(example.dag, run_conf={"prompts": prompts})
    states = task_states(run)
    assert set(states.values()) == {"success"} and len(states) == 2 + 1 + len(prompts)
    paths = xcom_value(run, "contact_sheet")
    folder = Path(paths["folder"])
    assert folder.parent == tmp_path / "mapped" and (folder / "index.html").exists()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [e["prompt"] for e in manifest["items"]] == prompts
    assert manifest["image_count"] == 3 and manifest["credits_spent"] == 30
    assert verify_manifest(str(folder)) == []
    assert doitong_conn.stats()["submissions_by_prompt"] == {p: 1 for p in prompts}
