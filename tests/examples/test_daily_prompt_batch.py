"""The daily prompt batch DAG in real Airflow (``dag.test()``) against the emulator."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from PIL import Image

from doitong_emulator import EmulatorAccount
from tests.conftest import run_dag, task_states, xcom_value
from tests.examples._helpers import DEFAULT_PROMPTS, load_example, prompts_in, submissions

FAST = {"poll_interval": 0.1}


@pytest.fixture
def batch() -> Any:
    return load_example("doitong_daily_prompt_batch")


def _asset_events(run_id: str) -> list[Any]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == "doitong_daily_images", AssetEvent.source_run_id == run_id)
        ).all()
        session.expunge_all()
        return list(rows)


def test_the_days_prompts_become_a_manifest_and_a_contact_sheet(
    batch: Any, doitong_conn: Any, tmp_path: Path
) -> None:
    prompts = prompts_in(DEFAULT_PROMPTS)
    assert len(prompts) >= 8

    run = run_dag(batch.dag, run_conf={"output_root": str(tmp_path), **FAST})

    states = task_states(run)
    assert set(states.values()) == {"success"}, states
    assert len([key for key in states if key.startswith("generate[")]) == len(prompts)
    assert doitong_conn.stats()["submissions_by_prompt"] == {prompt: 1 for prompt in prompts}

    day = run.logical_date.strftime("%Y-%m-%d")
    folder = tmp_path / day
    summary = xcom_value(run, "write_contact_sheet")
    assert summary["folder"] == str(folder)
    assert summary["manifest"] == str(folder / "manifest.json")
    assert summary["contact_sheet"] == str(folder / "index.html")

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["date"] == day and manifest["image_count"] == len(prompts)
    assert [image["prompt"] for image in manifest["images"]] == prompts
    charged = sum(doitong_conn.job(image["job_id"])["creditCost"] for image in manifest["images"])
    assert manifest["credits_spent"] == charged == 100_000 - doitong_conn.credits()
    assert manifest["credits_estimated"] == 10 * len(prompts)
    jpegs = {path.name for path in folder.glob("*.jpg")}
    assert jpegs == {image["file"] for image in manifest["images"]}
    for image in manifest["images"]:
        assert set(image) >= {"prompt", "job_id", "credits", "file", "sha256", "width", "height"}
        data = (folder / image["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
        assert image["file"] == f"{image['job_id']}.jpg" and image["credits"] == 10
        with Image.open(folder / image["file"]) as img:
            assert img.format == "JPEG"
            assert img.size == (image["width"], image["height"]) == (1024, 1024)

    sheet = (folder / "index.html").read_text()
    assert sheet.startswith("<!doctype html>")
    assert sorted(re.findall(r'<img src="([^"]+)"', sheet)) == sorted(jpegs)
    for image in manifest["images"]:
        assert image["job_id"] in sheet
    assert "http://" not in sheet and "https://" not in sheet and "file:" not in sheet

    events = _asset_events(run.run_id)
    assert len(events) == 1
    assert events[0].extra == summary
    assert summary["image_count"] == len(prompts) and summary["credits_spent"] == manifest["credits_spent"]
    assert summary["date"] == day


def test_prompts_from_the_run_conf_and_the_settings(batch: Any, doitong_conn: Any, tmp_path: Path) -> None:
    prompts = ["  a fox in the snow ", "# not a prompt", "", "a lighthouse at dawn", "a fox in the snow"]
    conf = {
        "prompts_file": prompts,
        "output_root": str(tmp_path),
        "width": 512,
        "height": 768,
        "quality": "high",
        "budget_credits": 40,
        **FAST,
    }
    run = run_dag(batch.dag, run_conf=conf)
    assert set(task_states(run).values()) == {"success"}
    submitted = doitong_conn.stats()["submissions_by_prompt"]
    assert submitted == {"a fox in the snow": 1, "a lighthouse at dawn": 1}
    manifest = json.loads(Path(xcom_value(run, "write_contact_sheet")["manifest"]).read_text())
    assert [(i["width"], i["height"], i["credits"]) for i in manifest["images"]] == [(512, 768, 20)] * 2
    assert manifest["credits_spent"] == 40


@pytest.mark.parametrize(
    ("conf", "credits", "message"),
    [
        pytest.param(
            {"budget_credits": 50},
            100_000,
            "Over budget: 8 images are estimated at 80 credits, over budget_credits=50 "
            "(the account balance is 100000)",
            id="budget",
        ),
        pytest.param(
            {},
            75,
            "Not enough Doitong credits: 8 images are estimated at 80 credits, the account balance is 75",
            id="balance",
        ),
    ],
)
def test_budget_check_fails_before_any_submission(
    batch: Any,
    emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: Any,
    conf: dict[str, Any],
    credits: int,
    message: str,
) -> None:
    emulator.add_account(EmulatorAccount(api_key="budget-key-0123456789", name="budget", credits=credits))
    monkeypatch.setenv(
        "AIRFLOW_CONN_DOITONG_DEFAULT",
        json.dumps({"conn_type": "doitong", "host": emulator.base_url, "password": "budget-key-0123456789"}),
    )
    run = run_dag(batch.dag, run_conf={"output_root": str(tmp_path), **conf, **FAST})
    states = task_states(run)
    assert states["read_prompts"] == "success" and states["check_budget"] == "failed"
    assert states["write_contact_sheet"] == "upstream_failed"
    assert message in capfd.readouterr().out
    assert submissions(emulator) == 0
    assert emulator.stats()["requests"]["account"] == 1
    assert not any(tmp_path.iterdir())


def test_a_bad_prompt_fails_the_check_before_any_request(
    batch: Any, doitong_conn: Any, tmp_path: Path, capfd: Any
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a good prompt\n" + "x" * 2001 + "\nanother good prompt\n")
    run = run_dag(batch.dag, run_conf={"prompts_file": str(prompts), "output_root": str(tmp_path), **FAST})
    states = task_states(run)
    assert states["check_budget"] == "failed"
    out = capfd.readouterr().out
    assert "1 of 3 prompts are invalid; nothing was submitted: prompt 2" in out
    assert "2001 characters after trimming; the limit is 2000" in out
    assert sum(doitong_conn.stats()["requests"].values()) == 0


def test_a_missing_prompts_file_fails_and_an_empty_one_skips(
    batch: Any, doitong_conn: Any, tmp_path: Path, capfd: Any
) -> None:
    missing = str(tmp_path / "nope.txt")
    run = run_dag(batch.dag, run_conf={"prompts_file": missing, "output_root": str(tmp_path)})
    assert task_states(run)["read_prompts"] == "failed"
    assert f"The prompts file {tmp_path / 'nope.txt'} does not exist" in capfd.readouterr().out

    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing today\n\n")
    run = run_dag(batch.dag, run_conf={"prompts_file": str(empty), "output_root": str(tmp_path)})
    states = task_states(run)
    assert states["read_prompts"] == "skipped" and states["write_contact_sheet"] == "skipped"
    assert sum(doitong_conn.stats()["requests"].values()) == 0


def test_load_prompts_rules(batch: Any, tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("# comment\n\n  first  \nsecond\n# second\nfirst\n\tthird\n")
    assert batch.load_prompts(str(path)) == (["first", "second", "third"], str(path))
    assert batch.load_prompts(["b", " a", "b", "", "# c"])[0] == ["b", "a"]
    relative, source = batch.load_prompts("prompts/daily_prompts.txt")
    assert source == str(DEFAULT_PROMPTS) and relative == prompts_in(DEFAULT_PROMPTS)
    with pytest.raises(AirflowFailException, match="not a string"):
        batch.load_prompts(["ok", 3])


def test_contact_sheet_escapes_prompts(batch: Any) -> None:
    manifest = {
        "date": "2025-01-02",
        "run_id": "r",
        "image_count": 1,
        "credits_spent": 10,
        "images": [
            {
                "prompt": '<script>alert("x")</script> & co',
                "job_id": "j1",
                "credits": 10,
                "file": "a b.jpg",
                "sha256": "0",
                "width": 256,
                "height": 256,
            }
        ],
    }
    sheet = batch.render_contact_sheet(manifest)
    assert "<script>" not in sheet and "&lt;script&gt;" in sheet
    assert '<img src="a%20b.jpg" width="256" height="256"' in sheet
