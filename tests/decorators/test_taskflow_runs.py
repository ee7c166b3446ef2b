"""``@task.doitong`` and ``@task.doitong_batch`` in real Airflow (``dag.test()``) against the emulator.

The function runs once per try: a deferrable task that waits in the triggerer (and one whose
submission was refused and waited out in a deferral first) resumes without running it again.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, task

from airflow_provider_doitong.batch import manifest as manifest_api
from airflow_provider_doitong.client import DoitongClient
from airflow_provider_doitong.decorators.doitong import INPUT_XCOM_KEY
from doitong_emulator import DoitongEmulator, EmulatorAccount
from doitong_emulator.pytest_plugin import EmulatorFactory
from tests.conftest import conn_json, run_dag, task_states, xcom_value

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


_ids = itertools.count()


def _dag() -> DAG:
    return DAG(
        f"doitong_taskflow_{next(_ids)}",
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        catchup=False,
    )


def _single_dag(calls: list[str], tmp_path: Path, **kwargs: Any) -> DAG:
    with _dag() as dag:

        @task.doitong(width=256, height=256, poll_interval=0.1, output_path=f"{tmp_path}/", **kwargs)
        def hero(subject: str, run_id: str | None = None) -> str:
            calls.append(subject)
            assert run_id  # the task context reaches the function, as with @task
            return f"a poster of {subject}, flat colours"

        hero("a fox")
    return dag


def _runs_of(task_id: str, caplog: pytest.LogCaptureFixture) -> int:
    """How many times ``dag.test()`` ran the task: once, and once more after each deferral."""
    return sum(1 for m in caplog.messages if "[DAG TEST] running task" in m and f".{task_id} " in m)


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_one_image_from_the_returned_prompt(
    doitong_conn: Any, tmp_path: Path, deferrable: bool, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    run = run_dag(_single_dag(calls, tmp_path, deferrable=deferrable))
    assert task_states(run) == {"hero": "success"}
    prompt = "a poster of a fox, flat colours"
    result = xcom_value(run, "hero")
    assert isinstance(result, dict)
    assert result["status"] == "completed" and result["prompt"] == prompt
    assert result["output_path"] == str(tmp_path / f"{result['job_id']}.jpg")
    assert Path(result["output_path"]).is_file()
    # kept for the resume only when the task deferred
    assert xcom_value(run, "hero", key=INPUT_XCOM_KEY) == ({"prompt": prompt} if deferrable else None)
    assert calls == ["a fox"]  # once, even when the task ran again after its deferral
    assert _runs_of("hero", caplog) == (2 if deferrable else 1)
    assert doitong_conn.stats()["submissions_by_prompt"] == {prompt: 1}


def test_mapped_deferrable_tasks_each_resume_with_their_own_prompt(doitong_conn: Any, tmp_path: Path) -> None:
    subjects = ["a fox", "a heron", "a kite"]
    calls: list[str] = []
    with _dag() as dag:

        @task.doitong(width=256, height=256, poll_interval=0.1, deferrable=True, output_path=f"{tmp_path}/")
        def hero(subject: str) -> str:
            calls.append(subject)
            return f"a poster of {subject}"

        hero.expand(subject=subjects)
    run = run_dag(dag)
    assert task_states(run) == {f"hero[{n}]": "success" for n in range(len(subjects))}
    for n, subject in enumerate(subjects):
        result = xcom_value(run, "hero", map_index=n)
        assert isinstance(result, dict) and result["prompt"] == f"a poster of {subject}"
        assert xcom_value(run, "hero", map_index=n, key=INPUT_XCOM_KEY) == {"prompt": result["prompt"]}
    assert sorted(calls) == sorted(subjects)
    assert doitong_conn.stats()["submissions_by_prompt"] == {f"a poster of {s}": 1 for s in subjects}


@pytest.fixture
def windowed_emulator(doitong_emulators: EmulatorFactory) -> Any:
    """A 12-second rate-limit window and 1-second jobs: a refused submission is waited out in a deferral."""
    with doitong_emulators(plan="pro", time_scale=0.2, job_seconds=5, credits=100_000) as emu:
        yield emu


def test_a_refused_submission_resumes_without_running_the_function_again(
    windowed_emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The task defers twice: until the rate-limit window resets (resuming in ``execute``), then for the job."""
    emu = windowed_emulator
    key = "key-taskflow-window-0123456789"
    emu.add_account(EmulatorAccount(api_key=key, name="taskflow", plan="pro", requests_per_minute=5))
    monkeypatch.setenv(
        "AIRFLOW_CONN_DOITONG_DEFAULT",
        json.dumps({"conn_type": "doitong", "host": emu.base_url, "password": key}),
    )
    calls: list[str] = []
    with _dag() as dag:

        @task.doitong(width=256, height=256, poll_interval=0.1, deferrable=True, timeout=120)
        def hero(subject: str) -> str:
            calls.append(subject)
            with DoitongClient(base_url=emu.base_url, api_key=key) as client:
                for _ in range(5):  # the window's requests, used up just before the submission
                    client.get_account()
            return f"a poster of {subject}"

        hero("a fox")
    run = run_dag(dag)
    assert task_states(run) == {"hero": "success"}
    assert _runs_of("hero", caplog) == 3  # first run, resumed in execute, resumed in execute_complete
    assert calls == ["a fox"]
    stats = emu.stats()
    assert stats["http_429"] >= 1 and stats["requests"]["account"] == 5
    assert stats["submissions_by_prompt"] == {"a poster of a fox": 1}
    assert xcom_value(run, "hero")["prompt"] == "a poster of a fox"  # type: ignore[index]


def test_a_function_returning_no_prompt_fails_before_anything_is_sent(
    doitong_conn: Any, tmp_path: Path
) -> None:
    with _dag() as dag:

        @task.doitong(output_path=f"{tmp_path}/", retries=2)
        def hero() -> Any:
            return ["a fox", "a heron"]

        hero()
    run = run_dag(dag)
    assert task_states(run) == {"hero": "failed"}  # no retry: the function's answer will not change
    assert doitong_conn.stats()["submissions_by_prompt"] == {}


def test_a_prompt_the_operator_refuses_is_neither_kept_nor_sent(doitong_conn: Any, tmp_path: Path) -> None:
    """The function's result is kept (in XCom) only once the operator has checked it and defers."""
    with _dag() as dag:

        @task.doitong(output_path=f"{tmp_path}/", deferrable=True, retries=2)
        def hero() -> str:
            return "a fox " * 400  # 2,400 characters: over the contract's 2,000

        hero()
    run = run_dag(dag)
    assert task_states(run) == {"hero": "failed"}
    assert xcom_value(run, "hero", key=INPUT_XCOM_KEY) is None
    assert doitong_conn.stats()["submissions_by_prompt"] == {}


def test_a_batch_from_a_list_and_from_a_file(doitong_conn: Any, tmp_path: Path) -> None:
    listed = ["a kite over dunes", "a teapot on a windowsill"]
    from_file = ["a heron in the reeds", "a paper boat", "a lantern in the fog"]
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("# tomorrow's prompts\n" + "\n".join(from_file) + "\n")
    calls: list[str] = []
    with _dag() as dag:
        common = {"width": 256, "height": 256, "poll_interval": 0.1}

        @task.doitong_batch(output_path=f"{tmp_path}/listed/", **common)
        def listed_batch(subjects: list[str]) -> list[str]:
            calls.append("listed")
            return subjects

        @task.doitong_batch(output_path=f"{tmp_path}/from_file/", **common)
        def file_batch(name: str) -> Path:
            calls.append("file")
            return tmp_path / name

        listed_batch(listed)
        file_batch("prompts.txt")
    run = run_dag(dag)
    assert task_states(run) == {"listed_batch": "success", "file_batch": "success"}
    assert sorted(calls) == ["file", "listed"]
    for task_id, prompts in (("listed_batch", listed), ("file_batch", from_file)):
        summary = xcom_value(run, task_id)
        assert isinstance(summary, dict)
        assert summary["stored"] == len(prompts) and summary["failed"] == 0
        assert summary["credits_spent"] == 10 * len(prompts)
        manifest = json.loads(Path(summary["manifest"]).read_text())
        assert [e["prompt"] for e in manifest["items"]] == prompts
        assert manifest_api.verify_manifest(summary["folder"]) == []
        assert xcom_value(run, task_id, key=INPUT_XCOM_KEY) is None  # never deferred: nothing kept
    assert doitong_conn.stats()["submissions_by_prompt"] == {p: 1 for p in listed + from_file}


def test_a_deferred_batch_resumes_with_the_returned_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    prompts = ["a kite over dunes", "a teapot on a windowsill"]
    calls: list[int] = []
    with DoitongEmulator(plan="pro", time_scale=0.5, job_seconds=20, credits=100_000) as emu:  # 10 s jobs
        monkeypatch.setenv("AIRFLOW_CONN_DOITONG_DEFAULT", conn_json(emu))
        with _dag() as dag:

            @task.doitong_batch(
                output_path=f"{tmp_path}/out/",
                width=256,
                height=256,
                deferrable=True,
                min_defer_seconds=0,
                poll_interval=8,
            )
            def batch() -> list[str]:
                calls.append(1)
                return prompts

            batch()
        run = run_dag(dag)
        stats = emu.stats()
    assert task_states(run) == {"batch": "success"}
    assert _runs_of("batch", caplog) >= 2 and calls == [1]  # deferred, resumed without the function
    summary = xcom_value(run, "batch")
    assert isinstance(summary, dict) and summary["stored"] == len(prompts)
    manifest = json.loads(Path(summary["manifest"]).read_text())
    assert [item["prompt"] for item in manifest["items"]] == prompts
    assert xcom_value(run, "batch", key=INPUT_XCOM_KEY) == {"prompts": prompts, "prompts_file": None}
    assert stats["submissions_by_prompt"] == {p: 1 for p in prompts}


def test_a_batch_function_returning_a_string_fails_before_anything_is_sent(
    emulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DOITONG_DEFAULT", conn_json(emulator))
    (tmp_path / "prompts.txt").write_text("a fox\n")
    with _dag() as dag:

        @task.doitong_batch(output_path=f"{tmp_path}/out/")
        def batch() -> Any:
            return str(tmp_path / "prompts.txt")  # a path as a string: ambiguous, so refused

        batch()
    run = run_dag(dag)
    assert task_states(run) == {"batch": "failed"}
    assert emulator.stats()["submissions_by_prompt"] == {}
    assert not (tmp_path / "out").exists()
