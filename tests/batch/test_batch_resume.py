"""A deferrable batch resumes from the items its first try saved, never from the prompts read again (``dag.test()``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.operators.batch import FluxBatchOperator
from tests.batch.test_batch_operator import PROMPTS, batch_dag
from tests.conftest import run_dag, task_states

FIRST = PROMPTS[:6]
#: Where the docs say a batch's items are saved, in its ledger's folder.
ITEMS_NAME = "items.jsonl"


def on_first_deferral(monkeypatch: pytest.MonkeyPatch, action: Callable[[], None]) -> list[int]:
    """Run ``action`` once, as the batch defers for the first time (its ledger and items written)."""
    original = FluxBatchOperator.defer
    deferrals: list[int] = []

    def defer(self: FluxBatchOperator, **kwargs: Any) -> Any:
        deferrals.append(1)
        if len(deferrals) == 1:
            action()
        return original(self, **kwargs)

    monkeypatch.setattr(FluxBatchOperator, "defer", defer)
    return deferrals


def read_manifest(output: str) -> dict[str, Any]:
    import fsspec

    if output.startswith("memory://"):
        return json.loads(fsspec.filesystem("memory").cat(output[len("memory://") :] + "/manifest.json"))
    return json.loads((Path(output) / "manifest.json").read_text())


@pytest.mark.parametrize("where", ["local", "object storage"])
@pytest.mark.parametrize("change", ["deleted", "changed"])
def test_a_resume_reads_the_saved_items_not_the_prompts_file(
    doitong_conn: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: Any,
    change: str,
    where: str,
) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# the day's prompts\n" + "\n".join(FIRST) + "\n")

    def edit() -> None:
        if change == "deleted":
            prompts.unlink()
        else:
            prompts.write_text("a different prompt\nand another one\n")

    deferrals = on_first_deferral(monkeypatch, edit)
    output = str(tmp_path / "out") if where == "local" else f"memory://resume-{tmp_path.name}/images"
    dag = batch_dag(
        f"batch_resume_{change}_{where.replace(' ', '_')}",
        prompts_file=str(prompts),
        output_path=output,
        deferrable=True,
        min_defer_seconds=0,
    )
    run = run_dag(dag)
    out = capfd.readouterr().out
    assert len(deferrals) >= 1 and "Resumed" in out
    assert task_states(run) == {"batch": "success"}
    manifest = read_manifest(output)
    assert [entry["prompt"] for entry in manifest["items"]] == FIRST
    assert manifest["image_count"] == len(FIRST)
    assert doitong_conn.stats()["submissions_by_prompt"] == {prompt: 1 for prompt in FIRST}


def test_tampered_saved_items_are_a_final_error_naming_the_file(
    doitong_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    folder = tmp_path / "out"

    def tamper() -> None:
        (saved,) = folder.rglob(ITEMS_NAME)
        text = saved.read_text()
        assert FIRST[4] in text
        saved.write_text(text.replace(FIRST[4], "a prompt nobody checked"))

    on_first_deferral(monkeypatch, tamper)
    dag = batch_dag(
        "batch_resume_tampered",
        prompts=FIRST,
        output_path=str(folder),
        deferrable=True,
        min_defer_seconds=0,
        retries=2,
        retry_delay=0,
    )
    run = run_dag(dag)
    out = capfd.readouterr().out
    assert task_states(run) == {"batch": "failed"}
    assert run.get_task_instances()[0].try_number == 1  # final: not retried
    (saved,) = folder.rglob(ITEMS_NAME)
    assert f"The batch's saved items {saved} are not the file its first try wrote" in out
    assert "damaged or changed by hand" in out
    assert "a prompt nobody checked" not in doitong_conn.stats()["submissions_by_prompt"]


def test_saved_items_deleted_are_read_again_checked_and_saved_again(
    doitong_conn: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "out"
    deleted: list[str] = []

    def delete() -> None:
        (saved,) = folder.rglob(ITEMS_NAME)
        deleted.append(saved.read_text())
        saved.unlink()

    on_first_deferral(monkeypatch, delete)
    dag = batch_dag(
        "batch_resume_items_deleted",
        prompts=FIRST,
        output_path=str(folder),
        deferrable=True,
        min_defer_seconds=0,
    )
    run = run_dag(dag)
    out = capfd.readouterr().out
    assert task_states(run) == {"batch": "success"}
    assert "are missing; reading the prompts again" in out + caplog.text
    (saved,) = folder.rglob(ITEMS_NAME)
    assert saved.read_text() == deleted[0]  # saved again, the same
    assert read_manifest(str(folder))["image_count"] == len(FIRST)
    assert doitong_conn.stats()["submissions_by_prompt"] == {prompt: 1 for prompt in FIRST}


def test_each_deferral_hands_the_trigger_the_planners_next_read(
    doitong_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    triggers: list[Any] = []
    original = FluxBatchOperator.defer

    def defer(self: FluxBatchOperator, **kwargs: Any) -> Any:
        triggers.append(kwargs["trigger"])
        return original(self, **kwargs)

    monkeypatch.setattr(FluxBatchOperator, "defer", defer)
    dag = batch_dag(
        "batch_first_read",
        prompts=FIRST,
        output_path=str(tmp_path / "out"),
        deferrable=True,
        min_defer_seconds=0,
        concurrency=2,
    )
    assert task_states(run_dag(dag)) == {"batch": "success"}
    assert triggers
    for trigger in triggers:  # never sooner than a poll interval after the task's own read
        assert trigger.read_at is not None and trigger.first_read_at is not None
        assert trigger.first_read_at >= trigger.read_at + trigger.poll_interval - 1e-6
    # once the jobs' durations are known, at their expected end (0.4-s jobs: later than 0.2 s)
    assert any(t.first_read_at > t.read_at + t.poll_interval + 0.05 for t in triggers)
