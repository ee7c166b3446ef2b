"""``FluxBatchOperator`` in real Airflow (``dag.test()``) against the emulator, sync and deferrable."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, Asset
from PIL import Image

from airflow_provider_doitong.batch import manifest as manifest_api
from airflow_provider_doitong.operators import lineage
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from doitong_emulator import EmulatorAccount, FaultConfig
from tests.airflow_versions import AIRFLOW_VERSION, unwrapped, without_mask_requests
from tests.conftest import conn_json, run_dag, task_states, xcom_value

PROMPTS = [f"a lighthouse at dawn, study {n}" for n in range(23)]
IMAGES = Asset(name="doitong_batch_test_images")
SUMMARY_KEYS = {
    "folder",
    "manifest",
    "contact_sheet",
    "ledger",
    "items",
    "stored",
    "failed",
    "credits_spent",
    "credits_estimated",
}


def batch_dag(dag_id: str, **kwargs: Any) -> DAG:
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False) as dag:
        FluxBatchOperator(
            task_id="batch",
            **{"width": 256, "height": 256, "poll_interval": 0.2, "outlets": [IMAGES], **kwargs},
        )
    return dag


def check_folder(folder: Path, prompts: list[str], emu: Any) -> dict[str, Any]:
    """Every prompt stored once, named by item, listed in the manifest with its true SHA-256."""
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest_api.verify_manifest(str(folder)) == []
    entries = manifest["items"]
    assert [e["prompt"] for e in entries] == prompts
    assert all(e["status"] == "stored" for e in entries)
    for number, entry in enumerate(entries, start=1):
        data = (folder / entry["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
        assert re.fullmatch(rf"{number:04d}-a-lighthouse-at-dawn-study-\d+\.jpg", entry["file"])
        assert emu.job(entry["job_id"])["status"] == "completed"
        with Image.open(folder / entry["file"]) as img:
            assert img.size == (256, 256)
    images = sorted(p.name for p in folder.glob("*.jpg"))
    assert images == sorted(e["file"] for e in entries)
    assert emu.stats()["submissions_by_prompt"] == {p: 1 for p in prompts}
    sheet = (folder / "index.html").read_text()
    assert sorted(re.findall(r'<img src="([^"]+)"', sheet)) == images
    return manifest


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_batch_stores_every_image_with_its_manifest(
    doitong_conn: Any, tmp_path: Path, deferrable: bool, capfd: Any
) -> None:
    folder = tmp_path / "out"
    dag = batch_dag(
        f"batch_all_{deferrable}",
        prompts=PROMPTS,
        output_path=str(folder),
        deferrable=deferrable,
        min_defer_seconds=0,
    )
    run = run_dag(dag)
    assert task_states(run) == {"batch": "success"}
    manifest = check_folder(folder, PROMPTS, doitong_conn)
    summary = xcom_value(run, "batch")
    assert set(summary) == SUMMARY_KEYS | {"job_durations"}  # counts, paths, durations: never the items
    assert summary["job_durations"]["jobs"] == len(PROMPTS) and summary["job_durations"]["width"] == 256
    assert summary["stored"] == summary["items"] == len(PROMPTS) and summary["failed"] == 0
    assert summary["credits_spent"] == manifest["credits_spent"] == 10 * len(PROMPTS)
    assert summary["credits_estimated"] == 10 * len(PROMPTS) == 100_000 - doitong_conn.credits()
    assert summary["manifest"] == str(folder / "manifest.json")
    assert manifest["source"]["run_id"] == run.run_id
    stats = doitong_conn.stats()
    assert stats["max_in_flight"]["overall"] == 10  # the pro plan's slots, all used
    assert stats["requests"]["status"] < len(PROMPTS)  # coalesced reads
    out = capfd.readouterr().out
    # images are stored as their downloads end, several at once: the 23rd stored is any of them
    assert re.search(r"\[23/23\] stored 00[0-2][0-9]-", out) and "23/23 done, 0 failed" in out
    assert ("Deferring with" in out) is deferrable and ("Resumed" in out) is deferrable
    # (Airflow 3.0's dag.test() debug log echoes the request to mask the key, key included: not ours)
    assert not [
        line for line in out.splitlines() if doitong_conn.api_key in line and "MaskSecret" not in line
    ]


def test_prompts_file_jsonl_with_per_item_options(doitong_conn: Any, tmp_path: Path) -> None:
    prompts = tmp_path / "items.jsonl"
    prompts.write_text(
        '{"prompt": "a fox", "width": 512, "height": 256}\n'
        '{"prompt": "a tram", "quality": "high"}\n'
        '{"prompt": "a fox", "width": 512, "height": 256}\n'
    )
    run = run_dag(batch_dag("batch_jsonl", prompts_file=str(prompts), output_path=str(tmp_path / "out")))
    assert task_states(run) == {"batch": "success"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [(e["prompt"], e["width"], e["height"], e["credits"]) for e in manifest["items"]] == [
        ("a fox", 512, 256, 10),
        ("a tram", 256, 256, 20),
    ]
    assert doitong_conn.stats()["submissions_by_prompt"] == {"a fox": 1, "a tram": 1}


@pytest.mark.parametrize(
    ("kwargs", "credits", "message", "account_reads"),
    [
        ({"max_credits": 100}, 100_000, "23 images are estimated at 230 credits, over max_credits=100", 0),
        ({}, 200, "estimated at 230 credits, the account balance is 200; nothing was submitted", 1),
    ],
    ids=["max_credits", "balance"],
)
def test_the_budget_is_refused_before_anything_is_submitted(
    emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capfd: Any,
    kwargs: dict[str, Any],
    credits: int,
    message: str,
    account_reads: int,
) -> None:
    emulator.add_account(EmulatorAccount(api_key="budget-key-0123456789", name="budget", credits=credits))
    conn = {"conn_type": "doitong", "host": emulator.base_url, "password": "budget-key-0123456789"}
    monkeypatch.setenv("AIRFLOW_CONN_DOITONG_DEFAULT", json.dumps(conn))
    run = run_dag(
        batch_dag(f"batch_budget_{account_reads}", prompts=PROMPTS, output_path=str(tmp_path), **kwargs)
    )
    assert task_states(run) == {"batch": "failed"}
    assert message in capfd.readouterr().out
    requests = emulator.stats()["requests"]
    assert requests["submit"] == 0 and requests["account"] == account_reads
    assert not any(tmp_path.iterdir())  # not even a ledger


def test_a_bad_item_fails_before_any_request(doitong_conn: Any, tmp_path: Path, capfd: Any) -> None:
    run = run_dag(
        batch_dag(
            "batch_bad",
            prompts=["fine", "x" * 2001, {"prompt": "y", "width": 300}],
            output_path=str(tmp_path),
        )
    )
    assert task_states(run) == {"batch": "failed"}
    out = capfd.readouterr().out
    assert "2 of 3 items are invalid; nothing was submitted: item 2" in out and "item 3 ('y'): width" in out
    assert sum(doitong_conn.stats()["requests"].values()) == 0


def test_a_prompts_file_line_that_is_not_text_spends_nothing(
    doitong_conn: Any, tmp_path: Path, capfd: Any
) -> None:
    prompts = tmp_path / "items.jsonl"
    prompts.write_text('{"prompt": "a fox"}\n{"prompt": "a fox \\ud83e"}\n{"prompt": "\\u200b\\u2060"}\n')
    run = run_dag(batch_dag("batch_not_text", prompts_file=str(prompts), output_path=str(tmp_path / "out")))
    assert task_states(run) == {"batch": "failed"}
    out = capfd.readouterr().out
    assert (
        "2 of 3 items are invalid; nothing was submitted: line 2 ('a fox \\ud83e'): prompt is not valid"
        in out
    )
    assert "line 3 ('\\u200b\\u2060'): prompt has no visible character" in out
    assert sum(doitong_conn.stats()["requests"].values()) == 0 and doitong_conn.credits() == 100_000
    assert not (tmp_path / "out").exists()


def test_items_holding_the_key_are_refused_before_any_request(
    doitong_conn: Any, tmp_path: Path, capfd: Any
) -> None:
    prompts = [
        "a fox",
        "{{ conn.doitong_default.password }}",
        "a {{ conn.doitong_default.extra_dejson.webhook_secret }}",
    ]
    run = run_dag(batch_dag("batch_secret", prompts=prompts, output_path=str(tmp_path / "out")))
    assert task_states(run) == {"batch": "failed"}
    out = capfd.readouterr()
    text = without_mask_requests(out.out + out.err)
    if AIRFLOW_VERSION < (3, 1):
        # Airflow 3.0 renders the template (and records the rendered fields) before the task's code
        # runs, without masking what a template read; dag.test() echoes that record at debug level.
        text = "\n".join(line for line in text.splitlines() if "type='SetRenderedFields'" not in line)
    assert unwrapped(
        "2 of 3 items are refused; nothing was submitted: item 2: prompt holds a secret of the connection"
    ) in unwrapped(text)
    assert unwrapped("item 3: prompt holds a secret") in unwrapped(text)
    assert doitong_conn.api_key not in text and doitong_conn.webhook_secret not in text
    assert sum(doitong_conn.stats()["requests"].values()) == 0 and doitong_conn.credits() == 100_000
    assert not (tmp_path / "out").exists()  # no ledger, no manifest
    assert xcom_value(run, "batch") is None


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_max_credits_holds_against_real_charges(
    doitong_conn: Any, tmp_path: Path, capfd: Any, deferrable: bool
) -> None:
    # Ten items estimated at 10 credits each fit max_credits=100; Doitong charges 50 each.
    doitong_conn.set_faults(FaultConfig(charge_factor=5))
    prompts = PROMPTS[:10]
    folder = tmp_path / "out"
    dag = batch_dag(
        f"batch_overcharged_{deferrable}",
        prompts=prompts,
        output_path=str(folder),
        max_credits=100,
        deferrable=deferrable,
        min_defer_seconds=0,
    )
    run = run_dag(dag)
    assert task_states(run) == {"batch": "failed"}  # stopped by the budget, after storing what was paid
    out = capfd.readouterr().out
    assert "Doitong charged 50 credits, 40 more than the estimated 10" in out
    spent = 100_000 - doitong_conn.credits()
    assert spent == 50  # the first charge showed the batch would cost 140: nothing more went out
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["credits_spent"] == spent and manifest["image_count"] == 1
    assert manifest["unsubmitted"] == 9
    assert manifest["stopped"].startswith("max_credits=100 would be passed: Doitong charged 40 credits more")
    assert "9 of 10 items were left unsubmitted; every image paid for is stored (1, 50 credits" in out
    assert [e["status"] for e in manifest["items"]] == ["stored"] + ["pending"] * 9
    assert doitong_conn.stats()["submissions_by_prompt"] == {prompts[0]: 1}


def test_failed_jobs_are_retried_and_max_failed_items_is_honoured(doitong_conn: Any, tmp_path: Path) -> None:
    doitong_conn.set_faults(FaultConfig(fail_job_rate=0.3, seed=11))
    run = run_dag(
        batch_dag("batch_retries", prompts=PROMPTS, output_path=str(tmp_path / "a"), item_retries=5)
    )
    assert task_states(run) == {"batch": "success"}
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    retried = [e for e in manifest["items"] if len(e.get("job_ids", [])) > 1]
    assert retried and all(e["status"] == "stored" for e in manifest["items"])
    assert manifest_api.verify_manifest(str(tmp_path / "a")) == []

    doitong_conn.reset()
    doitong_conn.set_faults(FaultConfig(fail_job_rate=1.0, seed=3))
    run = run_dag(
        batch_dag(
            "batch_give_up",
            prompts=PROMPTS,
            output_path=str(tmp_path / "b"),
            item_retries=0,
            max_failed_items=3,
        )
    )
    assert task_states(run) == {"batch": "failed"}
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    # It stops at the first read that sees more than 3 failed: the first wave of 10, and at most the
    # 3 submitted into the slots of failures seen before (a loaded machine spreads the wave's ends).
    submitted = manifest["failed_count"]
    assert 10 <= submitted <= 13 and manifest["image_count"] == 0
    assert doitong_conn.stats()["requests"]["submit"] == submitted
    failed = [e for e in manifest["items"] if e["status"] == "failed"]
    assert all("GENERATION_FAILED" in e["error"] for e in failed)
    assert [e["status"] for e in manifest["items"][submitted:]] == ["pending"] * (23 - submitted)


def test_a_folder_holding_another_runs_batch_is_refused(
    doitong_conn: Any, tmp_path: Path, capfd: Any
) -> None:
    run = run_dag(batch_dag("batch_first", prompts=PROMPTS[:2], output_path=str(tmp_path)))
    assert task_states(run) == {"batch": "success"}
    before = {p.name: p.stat().st_mtime for p in tmp_path.iterdir()}
    run = run_dag(batch_dag("batch_second", prompts=PROMPTS[:2], output_path=str(tmp_path)))
    assert task_states(run) == {"batch": "failed"}
    assert "holds the batch of" in capfd.readouterr().out
    assert {p.name: p.stat().st_mtime for p in tmp_path.iterdir()} == before
    assert doitong_conn.stats()["requests"]["submit"] == 2


def test_object_storage_output(doitong_conn: Any, tmp_path: Path) -> None:
    import fsspec

    bucket = f"doitong-batch-{tmp_path.name}"
    run = run_dag(batch_dag("batch_memory", prompts=PROMPTS[:3], output_path=f"memory://{bucket}/images"))
    assert task_states(run) == {"batch": "success"}
    fs = fsspec.filesystem("memory")
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"/{bucket}/images", detail=False))
    assert names == [
        ".doitong",
        "0001-a-lighthouse-at-dawn-study-0.jpg",
        "0002-a-lighthouse-at-dawn-study-1.jpg",
        "0003-a-lighthouse-at-dawn-study-2.jpg",
        "index.html",
        "manifest.json",
    ]
    manifest = json.loads(fs.cat(f"/{bucket}/images/manifest.json"))
    for entry in manifest["items"]:
        data = fs.cat(f"/{bucket}/images/{entry['file']}")
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert fs.ls(f"/{bucket}/images/.doitong/batch_memory", detail=False)  # the ledger is there too


class SimulatedCrash(Exception):
    """Raised in place of a worker dying right after a submission's answer came, before it was recorded."""


@pytest.mark.parametrize("policy", ["resubmit", "fail"])
def test_a_crash_between_post_and_record_is_detected_on_retry(
    doitong_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any, policy: str
) -> None:
    from airflow_provider_doitong.batch.ledger import ItemState, Ledger

    original = Ledger.update
    crashed: list[int] = []

    def update(self: Ledger, index: int, **changes: Any) -> Any:
        if index == 12 and changes.get("state") is ItemState.RUNNING and not crashed:
            crashed.append(index)
            raise SimulatedCrash("the worker died")
        return original(self, index, **changes)

    monkeypatch.setattr(Ledger, "update", update)
    folder = tmp_path / "out"
    dag = batch_dag(
        f"batch_crash_{policy}",
        prompts=PROMPTS,
        output_path=str(folder),
        retries=1,
        retry_delay=0,
        on_ambiguous_submission=policy,
        max_failed_items=1,
    )
    run = run_dag(dag)
    assert crashed == [12]
    out = capfd.readouterr().out
    assert task_states(run) == {"batch": "success"}
    assert "item 13 (item 13) was being submitted when an earlier try stopped" in out
    counts = doitong_conn.stats()["submissions_by_prompt"]
    # items 1-12 were recorded before the crash, and the retry reattached to their jobs
    assert counts == {p: (2 if n == 12 and policy == "resubmit" else 1) for n, p in enumerate(PROMPTS)}
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = manifest["items"][12]
    assert entry["ambiguous_submissions"] == 1
    if policy == "resubmit":
        assert "this may charge it twice" in out
        assert entry["status"] == "stored" and len(entry["job_ids"]) == 1  # the lost job id is unknown
        assert manifest["image_count"] == len(PROMPTS)
    else:
        assert entry["status"] == "failed" and "may exist and be charged" in entry["error"]
        assert manifest["image_count"] == len(PROMPTS) - 1 and manifest["failed_count"] == 1
    assert manifest_api.verify_manifest(str(folder)) == []


def test_openlineage_names_the_folder_the_manifest_the_prompts_file_and_the_jobs(tmp_path: Path) -> None:
    pytest.importorskip("airflow.providers.openlineage")
    prompts = tmp_path / "p.txt"
    operator = FluxBatchOperator(task_id="b", prompts_file=str(prompts), output_path=str(tmp_path / "out"))
    # As the review's deferral carries it (plain JSON), read back as the resumed task does.
    operator._lineage_state = lineage.BatchIO.from_json(
        {
            "folder": str(tmp_path / "out"),
            "manifest": str(tmp_path / "out" / "manifest.json"),
            "prompts_file": operator._prompts_location(),
            "job_ids": ["j1", "j2", "j1"],
            "credits": 20,
            "images": 2,
        }
    )
    got = operator.get_openlineage_facets_on_complete(None)
    assert [d.name for d in got.inputs] == [str(prompts)]
    assert [d.name for d in got.outputs] == [str(tmp_path / "out"), str(tmp_path / "out" / "manifest.json")]
    facet = got.run_facets["doitong"]
    assert list(facet.jobIds) == ["j1", "j2"] and facet.credits == 20 and facet.images == 2


def test_the_timeout_stops_waiting_and_the_manifest_shows_what_runs(
    doitong_conn: Any, tmp_path: Path, capfd: Any
) -> None:
    doitong_conn.set_faults(FaultConfig(stuck_job_rate=1.0, seed=4))
    folder = tmp_path / "out"
    run = run_dag(batch_dag("batch_timeout", prompts=PROMPTS[:4], output_path=str(folder), timeout=1.5))
    assert task_states(run) == {"batch": "failed"}
    out = capfd.readouterr().out
    assert "did not finish by its timeout: 0 of 4 stored; 4 jobs keep running at Doitong" in out
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [e["status"] for e in manifest["items"]] == ["running"] * 4
    assert all(e["job_id"] for e in manifest["items"])  # the next try reattaches to these
    assert doitong_conn.stats()["requests"]["submit"] == 4


@pytest.mark.parametrize(("policy", "state"), [("fail", "failed"), ("skip", "skipped")])
def test_the_daily_limit_stops_submitting_and_keeps_what_was_made(
    emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: Any, policy: str, state: str
) -> None:
    emulator.add_account(EmulatorAccount(api_key="daily-key-0123456789", name="daily", daily_limit=5))
    conn = {"conn_type": "doitong", "host": emulator.base_url, "password": "daily-key-0123456789"}
    monkeypatch.setenv("AIRFLOW_CONN_DOITONG_DEFAULT", json.dumps(conn))
    folder = tmp_path / "out"
    dag = batch_dag(
        f"batch_daily_{policy}",
        prompts=PROMPTS[:8],
        output_path=str(folder),
        on_daily_limit=policy,
        retries=1,
    )
    run = run_dag(dag)
    assert task_states(run) == {"batch": state}  # no retry: the limit holds until midnight
    assert "daily limit" in capfd.readouterr().out.lower()
    manifest = json.loads((folder / "manifest.json").read_text())
    # (which five the API accepted of the eight sent at once is its choice)
    assert sorted(e["status"] for e in manifest["items"]) == ["pending"] * 3 + ["stored"] * 5
    assert manifest_api.verify_manifest(str(folder)) == []
    # the eight went out in one group: five jobs, and a refusal for at least one of the other three
    # (a thread whose turn comes after the first refusal sends nothing); nothing was sent after them
    assert 6 <= emulator.stats()["requests"]["submit"] <= 8


def test_a_batch_that_would_take_the_account_below_its_credit_floor_submits_nothing(
    doitong_conn: Any, tmp_path: Path
) -> None:
    # 10 items at 10 credits would leave 99,900 of the 100,000: the connection keeps 99,950.
    dag = batch_dag("batch_floor_refused", prompts=PROMPTS[:10], output_path=str(tmp_path / "out"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_CONN_DOITONG_DEFAULT", conn_json(doitong_conn, credit_floor=99_950))
        run = run_dag(dag)
    assert task_states(run) == {"batch": "failed"}
    assert doitong_conn.stats()["requests"].get("submit", 0) == 0 and doitong_conn.credits() == 100_000


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_the_credit_floor_is_read_before_each_submission_wave(
    doitong_conn: Any, tmp_path: Path, capfd: Any, deferrable: bool
) -> None:
    # Estimated at 10 credits, each image is charged 50, as if other work spent the account meanwhile:
    # waves of two, the balance read before each, stop once the next would pass 99,800.
    doitong_conn.set_faults(FaultConfig(charge_factor=5))
    folder = tmp_path / "out"
    dag = batch_dag(
        f"batch_floor_{deferrable}",
        prompts=PROMPTS[:10],
        output_path=str(folder),
        credit_floor=99_800,
        concurrency=2,
        deferrable=deferrable,
        min_defer_seconds=0,
    )
    run = run_dag(dag)
    assert task_states(run) == {"batch": "failed"}  # it names what was left unsubmitted
    assert doitong_conn.credits() == 99_800  # four images at 50: down to the floor, never below it
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["image_count"] == 4 and manifest["unsubmitted"] == 6
    assert "the account has 99800 credits and its credit floor is 99800" in manifest["stopped"]
    assert [e["status"] for e in manifest["items"]] == ["stored"] * 4 + ["pending"] * 6
    assert "6 of 10 items were left unsubmitted" in capfd.readouterr().out
