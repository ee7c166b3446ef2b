"""``output_path`` checked before the first credit, in real Airflow (``dag.test()``) against the emulator.

Both operators write a probe file in the final folder before they submit, and claim what they
write: a batch its whole folder, a ``FluxGenerateOperator`` the file it names. A folder that
cannot be written, or that another run holds, costs nothing: the emulator's account and request
log say so.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_doitong.batch.ledger import ItemState, Ledger
from airflow_provider_doitong.operators.batch import FluxBatchOperator
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from tests.conftest import run_dag, task_states

_ids = itertools.count()
CREDITS = 100_000


def one_task_dag(operator: type, prefix: str, **kwargs: Any) -> DAG:
    with DAG(
        f"{prefix}_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False
    ) as dag:
        operator(
            task_id="task",
            **{"width": 256, "height": 256, "poll_interval": 0.1, "retries": 2, "retry_delay": 0, **kwargs},
        )
    return dag


def tries(run: Any) -> int:
    return int(run.get_task_instances()[0].try_number)


def submissions(emu: Any) -> int:
    return int(emu.stats()["requests"].get("submit", 0))


@pytest.mark.parametrize("operator", [FluxGenerateOperator, FluxBatchOperator], ids=["generate", "batch"])
def test_an_unwritable_output_path_costs_nothing(
    doitong_conn: Any, tmp_path: Path, capfd: Any, operator: type
) -> None:
    (tmp_path / "not-a-folder").write_text("a file")
    kwargs = {"prompt": "a fox"} if operator is FluxGenerateOperator else {"prompts": ["a fox", "a tram"]}
    run = run_dag(one_task_dag(operator, "unwritable", output_path=f"{tmp_path}/not-a-folder/day/", **kwargs))
    assert task_states(run) == {"task": "failed"}
    assert tries(run) == 1  # refused for good: a retry would find the same folder
    out = capfd.readouterr().out
    assert (
        "output_path" in out
        and "not-a-folder" in out
        and "submitted nothing" in out.replace("nothing was submitted", "submitted nothing")
    )
    assert submissions(doitong_conn) == 0 and doitong_conn.credits() == CREDITS


class SimulatedCrash(Exception):
    """In place of a worker that dies while its batch is under way."""


def test_a_second_run_on_a_folder_in_use_is_refused_before_it_spends(
    doitong_conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any
) -> None:
    """The first run is still under way (its worker died mid-batch: no manifest yet) when another
    run is pointed at the same folder."""
    original = Ledger.update

    def update(self: Ledger, index: int, **changes: Any) -> Any:
        if index == 2 and changes.get("state") is ItemState.STORED:
            raise SimulatedCrash("the worker died")
        return original(self, index, **changes)

    monkeypatch.setattr(Ledger, "update", update)
    first_prompts = [f"a lighthouse, study {n}" for n in range(4)]
    first = run_dag(
        one_task_dag(FluxBatchOperator, "in_use", prompts=first_prompts, output_path=str(tmp_path), retries=0)
    )
    assert task_states(first) == {"task": "failed"} and not (tmp_path / "manifest.json").exists()
    monkeypatch.setattr(Ledger, "update", original)
    images = {p.name: p.read_bytes() for p in tmp_path.glob("*.jpg")}
    assert images and doitong_conn.stats()["submissions_by_prompt"] == {p: 1 for p in first_prompts}
    capfd.readouterr()

    second = run_dag(one_task_dag(FluxBatchOperator, "in_use", prompts=["a tram"], output_path=str(tmp_path)))
    assert task_states(second) == {"task": "failed"} and tries(second) == 1
    out = capfd.readouterr().out
    assert f"run {first.run_id}" in out and "nothing was submitted" in out
    assert "a tram" not in doitong_conn.stats()["submissions_by_prompt"]
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.jpg")} == images
    claim = json.loads((tmp_path / ".doitong" / "claim.json").read_text())
    assert claim["owner"]["run_id"] == first.run_id


def test_a_named_file_is_refused_to_another_run_before_it_spends(
    doitong_conn: Any, tmp_path: Path, capfd: Any
) -> None:
    target = tmp_path / "cover.jpg"
    first = run_dag(one_task_dag(FluxGenerateOperator, "named", prompt="a fox", output_path=str(target)))
    assert task_states(first) == {"task": "success"}
    image = target.read_bytes()
    capfd.readouterr()
    second = run_dag(one_task_dag(FluxGenerateOperator, "named", prompt="a tram", output_path=str(target)))
    assert task_states(second) == {"task": "failed"} and tries(second) == 1
    out = capfd.readouterr().out
    assert f"run {first.run_id}" in out and "nothing was submitted" in out
    assert doitong_conn.stats()["submissions_by_prompt"] == {"a fox": 1}
    assert target.read_bytes() == image
