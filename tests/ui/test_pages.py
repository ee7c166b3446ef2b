"""What the plugin's pages read and show: only the task instance's own files, its progress, escaped.

The browser test (``test_browser.py``) runs the pages in a real Airflow; these cover what a browser
cannot reach easily: documents of other task instances, symlinks out of the folder, the live
snapshot a running batch writes (through ``dag.test()`` against the emulator).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.batch import manifest, progress
from airflow_provider_doitong.batch.items import ItemDefaults, build_items, entries_from_list
from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.batch.stores import LocalLedgerStore
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from airflow_provider_doitong.ui import locate, sheet
from tests.conftest import REPO, run_dag, task_states, xcom_value

OWNER = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1}
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32 + b"\xff\xd9"


def _ledger(folder: Path, prompts: list[str]) -> tuple[list[Any], Ledger]:
    items = build_items(entries_from_list(prompts), ItemDefaults())[0]
    store = LocalLedgerStore(str(progress.snapshot_path(str(folder), OWNER).parent.path))
    return items, Ledger.open(store, items=items, owner=OWNER)


def test_counts_and_the_log_line_say_what_is_left() -> None:
    counts = progress.counts_of(["stored", "running", "completed", "pending", "failed", "submitting"])
    assert counts == progress.Counts(total=6, stored=1, running=3, failed=1, left=4)
    line = progress.progress_line(done=1, total=6, failed=1, running=3, credits=10, eta=None)
    assert line == "1/6 done, 1 failed, 3 running, 4 left, 10 credits spent, ETA unknown"


def test_the_snapshot_is_the_batch_as_it_stands(tmp_path: Path) -> None:
    items, ledger = _ledger(tmp_path, ["a fox", "a crane", "a teapot"])
    (tmp_path / "0001-a-fox.jpg").write_bytes(JPEG)
    ledger.update(0, state=ItemState.STORED, file="0001-a-fox.jpg", credits=10, job_id="j1")
    ledger.update(1, state=ItemState.RUNNING, job_id="j2")
    progress.write_snapshot(str(tmp_path), items, ledger)
    doc = json.loads(progress.snapshot_path(str(tmp_path), OWNER).read_text())
    assert doc["progress"] == {"total": 3, "stored": 1, "running": 1, "failed": 0, "left": 2}
    assert doc["credits_spent"] == 10 and doc["source"] == OWNER
    found = locate.batch_doc(str(tmp_path), OWNER)
    assert found.live and [e["status"] for e in found.doc["items"]] == ["stored", "running", "pending"]
    assert locate.listed_file(found, "0001-a-fox.jpg").name == "0001-a-fox.jpg"
    page = sheet.render(found.doc, query=OWNER, live=True, state="running")
    assert '<meta http-equiv="refresh"' in page and "<b>2</b> left" in page and "<b>1</b> running" in page


def test_the_newer_manifest_wins_and_another_task_instances_is_ignored(tmp_path: Path) -> None:
    items, ledger = _ledger(tmp_path, ["a fox"])
    progress.write_snapshot(str(tmp_path), items, ledger)
    entries = manifest.entries_from_ledger(items, ledger.records)
    doc = manifest.build_manifest(entries, title="x", source={**OWNER, "run_id": "other"})
    doc["generated_at"] = "9999-01-01T00:00:00+00:00"
    manifest.write_manifest(str(tmp_path), doc)
    assert locate.batch_doc(str(tmp_path), OWNER).live  # the other run's manifest is not this one's
    manifest.write_manifest(str(tmp_path), {**doc, "source": OWNER})
    assert not locate.batch_doc(str(tmp_path), OWNER).live
    with pytest.raises(locate.NotFound):
        locate.batch_doc(str(tmp_path), {**OWNER, "task_id": "u"})
    with pytest.raises(locate.NotFound):
        locate.batch_doc(None, OWNER)  # no rendered output_path


def test_only_listed_files_inside_the_folder(tmp_path: Path) -> None:
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(JPEG)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "0001-a.jpg").symlink_to(outside)
    (folder / "0002-b.jpg").write_bytes(JPEG)
    items = [
        {"number": 1, "status": "stored", "file": "0001-a.jpg"},
        {"number": 2, "status": "stored", "file": "0002-b.jpg"},
        {"number": 3, "status": "stored", "file": "../secret.jpg"},
        {"number": 4, "status": "failed", "file": "0002-b.jpg"},
    ]
    found = locate.BatchDoc(doc={"items": items}, folder=locate.storage_path(str(folder)), live=False)
    for name in ("0001-a.jpg", "../secret.jpg", "manifest.json", "", ".doitong"):
        with pytest.raises(locate.NotFound):
            locate.listed_file(found, name)
    data, kind = locate.read_image(locate.listed_file(found, "0002-b.jpg"))
    assert data == JPEG and kind.media_type == "image/jpeg"
    (folder / "0002-b.jpg").write_bytes(b"<html><script>alert(1)</script>")
    with pytest.raises(locate.NotFound):  # served only as what its bytes are: an image, or nothing
        locate.read_image(locate.listed_file(found, "0002-b.jpg"))


def test_a_single_image_must_be_the_rendered_output_path_or_inside_it(tmp_path: Path) -> None:
    folder = tmp_path / "single"
    folder.mkdir()
    (folder / "job.jpg").write_bytes(JPEG)
    (tmp_path / "elsewhere.jpg").write_bytes(JPEG)
    assert locate.single_image(f"{folder}/", {"output_path": str(folder / "job.jpg")}).name == "job.jpg"
    assert locate.single_image(str(folder / "job.jpg"), {"output_path": str(folder / "job.jpg")})
    for result in ({"output_path": str(tmp_path / "elsewhere.jpg")}, {"output_path": None}, "x", None):
        with pytest.raises(locate.NotFound):
            locate.single_image(f"{folder}/", result)
    os.symlink(tmp_path / "elsewhere.jpg", folder / "link.jpg")
    with pytest.raises(locate.NotFound):
        locate.single_image(f"{folder}/", {"output_path": str(folder / "link.jpg")})


def test_the_page_escapes_what_the_manifest_says() -> None:
    doc = {
        "items": [
            {"number": 1, "status": "failed", "prompt": "<script>alert(1)</script>", "error": "<b>x</b>"},
            {"number": 2, "status": "stored", "file": 'a".jpg', "prompt": "ok"},
        ],
        "credits_spent": 0,
    }
    page = sheet.render(doc, query={**OWNER, "run_id": "<r>"}, live=False, state="success")
    assert "<script>" not in page and "&lt;script&gt;" in page and "<b>x</b>" not in page
    assert 'src="batch/file?' in page and "a%22.jpg" in page and "&lt;r&gt;" in page
    assert "http-equiv" not in page  # a finished batch does not reload


def test_a_running_batch_writes_its_snapshot(doitong_conn: Any, tmp_path: Path, capfd: Any) -> None:
    folder = tmp_path / "out"
    with DAG("ui_progress", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False) as dag:
        FluxBatchOperator(
            task_id="batch", prompts=["a fox", "a crane"], output_path=str(folder), width=256, height=256
        )
    run = run_dag(dag)
    assert task_states(run) == {"batch": "success"}
    owner = {"dag_id": "ui_progress", "run_id": run.run_id, "task_id": "batch", "map_index": -1}
    doc = json.loads(progress.snapshot_path(str(folder), owner).read_text())
    assert doc["progress"] == {"total": 2, "stored": 2, "running": 0, "failed": 0, "left": 0}
    assert "2/2 done, 0 failed, 0 running, 0 left, 20 credits spent" in capfd.readouterr().out


def test_links_name_the_task_instance_and_an_unstored_image_keeps_the_output_url(
    doitong_conn: Any, tmp_path: Path
) -> None:
    with DAG("ui_links", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False) as dag:
        FluxBatchOperator(
            task_id="batch", prompts=["a fox"], output_path=str(tmp_path / "b"), width=256, height=256
        )
        FluxGenerateOperator(task_id="image", prompt="a crane", width=256, height=256, poll_interval=0.1)
    run = run_dag(dag)
    assert task_states(run) == {"batch": "success", "image": "success"}
    query = f"dag_id=ui_links&run_id={quote(run.run_id, safe='')}&task_id=batch&map_index=-1"
    assert xcom_value(run, "batch", key="_link_DoitongContactSheetLink") == f"/doitong/batch?{query}"
    assert (
        xcom_value(run, "batch", key="_link_DoitongManifestLink") == f"/doitong/batch/manifest.json?{query}"
    )
    # no output_path: nothing stored to serve, so the link is the API's output URL (valid 24 hours)
    result = xcom_value(run, "image")
    assert result["output_path"] is None
    assert xcom_value(run, "image", key="_link_DoitongImageLink") == result["url"]


def test_the_package_registers_the_plugin() -> None:
    """A fresh install gets the plugin from the ``airflow.plugins`` entry point (not the provider's
    ``plugins``, which Airflow loads only with ``[core] lazy_discover_providers = False``)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from airflow.plugins_manager import AirflowPlugin

    from airflow_provider_doitong import get_provider_info, ui

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["airflow.plugins"]["doitong"]
    module, _, name = target.partition(":")
    plugin = getattr(importlib.import_module(module), name)
    assert issubclass(plugin, AirflowPlugin) and plugin.name == "doitong"
    assert [app["url_prefix"] for app in plugin.fastapi_apps] == [ui.URL_PREFIX]
    assert "plugins" not in get_provider_info()  # it would be registered twice


def test_object_storage_is_read_alike() -> None:
    """A batch on object storage (fsspec's in-memory store here): the same documents, files and checks."""
    root = f"memory://doitong-ui-{os.getpid()}/out"
    items = build_items(entries_from_list(["a fox", "a crane"]), ItemDefaults())[0]
    folder = locate.storage_path(root)
    ledger = Ledger.open(
        _object_store(progress.snapshot_path(folder, OWNER).parent), items=items, owner=OWNER
    )
    (folder / "0001-a-fox.jpg").write_bytes(JPEG)
    ledger.update(0, state=ItemState.STORED, file="0001-a-fox.jpg", credits=10)
    progress.write_snapshot(folder, items, ledger)
    found = locate.batch_doc(root, OWNER)
    assert found.live and found.doc["progress"]["stored"] == 1
    data, kind = locate.read_image(locate.listed_file(found, "0001-a-fox.jpg"))
    assert data == JPEG and kind.media_type == "image/jpeg"
    with pytest.raises(locate.NotFound):
        locate.listed_file(found, "0002-a-crane.jpg")  # not stored: not listed as such
    assert locate.single_image(f"{root}/", {"output_path": f"{root}/0001-a-fox.jpg"}).name == "0001-a-fox.jpg"
    with pytest.raises(locate.NotFound):
        locate.single_image(f"{root}/", {"output_path": f"memory://doitong-ui-{os.getpid()}/x.jpg"})


def _object_store(folder: Any) -> Any:
    from airflow_provider_doitong.batch.stores import ObjectLedgerStore

    return ObjectLedgerStore(folder)


def test_a_pages_thumbnails_read_the_document_once(tmp_path: Path) -> None:
    items, ledger = _ledger(tmp_path, ["a fox"])
    progress.write_snapshot(str(tmp_path), items, ledger)
    first = locate.recent_batch_doc(str(tmp_path), OWNER)
    progress.snapshot_path(str(tmp_path), OWNER).unlink()
    assert locate.recent_batch_doc(str(tmp_path), OWNER) is first  # not read again
    with pytest.raises(locate.NotFound):
        locate.batch_doc(str(tmp_path), OWNER)
