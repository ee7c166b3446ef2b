"""The daily prompt batch DAG in real Airflow (``dag.test()``) against the emulator."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from airflow_provider_doitong.batch.manifest import verify_manifest
from doitong_emulator import EmulatorAccount
from tests.conftest import run_dag, task_states, xcom_value
from tests.examples._helpers import DEFAULT_PROMPTS, load_example, prompts_in, submissions

FAST = {"poll_interval": 0.1}


@pytest.fixture
def batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DOITONG_OUTPUT_ROOTS", str(tmp_path / "images"))
    monkeypatch.delenv("DOITONG_PROMPTS_ROOTS", raising=False)
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


def day_folder(tmp_path: Path, run: Any) -> Path:
    (folder,) = (tmp_path / "images").iterdir()
    assert folder.name.startswith(run.logical_date.strftime("%Y-%m-%d") + "-manual-")
    return folder


def test_the_days_prompts_become_images_a_manifest_and_an_asset_event(
    batch: Any, doitong_conn: Any, tmp_path: Path
) -> None:
    prompts = prompts_in(DEFAULT_PROMPTS)
    assert len(prompts) >= 8
    run = run_dag(batch.dag, run_conf=FAST)
    assert task_states(run) == {"plan_day": "success", "generate": "success"}
    assert doitong_conn.stats()["submissions_by_prompt"] == {prompt: 1 for prompt in prompts}

    folder = day_folder(tmp_path, run)
    summary = xcom_value(run, "generate")
    assert summary["folder"] == str(folder) and summary["manifest"] == str(folder / "manifest.json")
    assert summary["contact_sheet"] == str(folder / "index.html")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [e["prompt"] for e in manifest["items"]] == prompts
    assert verify_manifest(str(folder)) == []
    charged = sum(doitong_conn.job(e["job_id"])["creditCost"] for e in manifest["items"])
    assert (
        manifest["credits_spent"] == charged == summary["credits_spent"] == 100_000 - doitong_conn.credits()
    )
    assert manifest["credits_estimated"] == 10 * len(prompts)
    for n, entry in enumerate(manifest["items"], start=1):
        assert entry["file"].startswith(f"{n:04d}-") and entry["file"].endswith(".jpg")
        with Image.open(folder / entry["file"]) as img:
            assert img.format == "JPEG" and img.size == (1024, 1024)
    sheet = (folder / "index.html").read_text()
    assert sorted(re.findall(r'<img src="([^"]+)"', sheet)) == sorted(e["file"] for e in manifest["items"])
    assert "http://" not in sheet and "https://" not in sheet and "file:" not in sheet

    (event,) = _asset_events(run.run_id)
    assert event.extra == summary and summary["stored"] == len(prompts)


def test_prompts_from_the_run_conf_and_the_settings(batch: Any, doitong_conn: Any, tmp_path: Path) -> None:
    prompts = ["  a fox in the snow ", "# not a prompt", "", "a lighthouse at dawn", "a fox in the snow"]
    conf = {
        "prompts_file": prompts,
        "width": 512,
        "height": 768,
        "quality": "high",
        "budget_credits": 40,
        **FAST,
    }
    run = run_dag(batch.dag, run_conf=conf)
    assert set(task_states(run).values()) == {"success"}
    assert doitong_conn.stats()["submissions_by_prompt"] == {
        "a fox in the snow": 1,
        "a lighthouse at dawn": 1,
    }
    folder = day_folder(tmp_path, run)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [(e["width"], e["height"], e["credits"]) for e in manifest["items"]] == [(512, 768, 20)] * 2
    assert manifest["credits_spent"] == 40
    assert (folder / "prompts.jsonl").read_text().count("\n") == 3  # kept on record beside the images


@pytest.mark.parametrize(
    ("conf", "credits", "message"),
    [
        pytest.param(
            {"budget_credits": 50},
            100_000,
            "8 images are estimated at 80 credits, over max_credits=50",
            id="budget",
        ),
        pytest.param(
            {}, 75, "estimated at 80 credits, the account balance is 75; nothing was submitted", id="balance"
        ),
    ],
)
def test_budget_check_fails_before_any_submission(
    batch: Any,
    emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
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
    run = run_dag(batch.dag, run_conf={**conf, **FAST})
    assert task_states(run) == {"plan_day": "success", "generate": "failed"}
    assert message in capfd.readouterr().out
    assert submissions(emulator) == 0
    assert emulator.stats()["requests"]["account"] == (0 if "budget_credits" in conf else 1)


@pytest.mark.parametrize(
    ("conf", "message"),
    [
        ({"prompts_file": "/etc/passwd"}, "prompts_file '/etc/passwd' is outside the configured roots"),
        ({"prompts_file": "../doitong_webhook.py"}, "prompts_file '../doitong_webhook.py' is outside"),
        ({"output_root": "/tmp"}, "output_root '/tmp' is outside the configured roots"),
        ({"output_root": "images/../../x"}, "is outside the configured roots"),
    ],
)
def test_run_conf_paths_stay_inside_the_configured_roots(
    batch: Any, doitong_conn: Any, capfd: Any, conf: dict[str, Any], message: str
) -> None:
    run = run_dag(batch.dag, run_conf={**conf, **FAST})
    assert task_states(run)["plan_day"] == "failed"
    assert message in capfd.readouterr().out
    assert sum(doitong_conn.stats()["requests"].values()) == 0


def test_prompts_files_under_a_configured_root(
    batch: Any, doitong_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    root = tmp_path / "prompts"
    root.mkdir()
    monkeypatch.setenv("DOITONG_PROMPTS_ROOTS", str(root))
    (root / "bad.txt").write_text("a good prompt\n" + "x" * 2001 + "\nanother good prompt\n")
    (root / "empty.txt").write_text("# nothing today\n\n")
    run = run_dag(batch.dag, run_conf={"prompts_file": "bad.txt", **FAST})
    assert task_states(run)["generate"] == "failed"
    out = capfd.readouterr().out
    assert "1 of 3 items are invalid; nothing was submitted: line 2" in out and "the limit is 2000" in out
    run = run_dag(batch.dag, run_conf={"prompts_file": "missing.txt", **FAST})
    assert task_states(run)["generate"] == "failed"
    assert f"The prompts file {root / 'missing.txt'} does not exist" in capfd.readouterr().out
    run = run_dag(batch.dag, run_conf={"prompts_file": "empty.txt", **FAST})
    assert task_states(run)["generate"] == "skipped"
    assert sum(doitong_conn.stats()["requests"].values()) == 0
