"""``@task.doitong`` and ``@task.doitong_batch``: registration, and what they accept, refuse and pass on.

What the decorated function returns becomes the operator's fields by a pure decision
(``_prompt_fields``/``_batch_fields``); the rest is checked where the user meets it: building the
task in a DAG file, rendering its templates, and resuming it.
"""

from __future__ import annotations

import pathlib
import warnings
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, ObjectStoragePath, task

from airflow_provider_doitong import get_provider_info
from airflow_provider_doitong._compat import AirflowFailException
from airflow_provider_doitong.decorators import doitong_batch_task, doitong_task
from airflow_provider_doitong.decorators.doitong import (
    INPUT_XCOM_KEY,
    DoitongBatchDecoratedOperator,
    DoitongDecoratedOperator,
    _batch_fields,
    _prompt_fields,
)

DECORATORS = {
    "doitong": "airflow_provider_doitong.decorators.doitong.doitong_task",
    "doitong_batch": "airflow_provider_doitong.decorators.doitong.doitong_batch_task",
}


def _dag() -> DAG:
    return DAG("doitong_taskflow_args", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"))


# --- registration ------------------------------------------------------------------------------
def test_provider_info_lists_the_decorators() -> None:
    listed = {d["name"]: d["class-name"] for d in get_provider_info()["task-decorators"]}
    assert listed == DECORATORS


def test_the_runtime_providers_manager_resolves_them() -> None:
    runtime = pytest.importorskip("airflow.sdk.providers_manager_runtime")
    decorators = runtime.ProvidersManagerTaskRuntime().taskflow_decorators
    assert decorators["doitong"] is doitong_task
    assert decorators["doitong_batch"] is doitong_batch_task


def test_the_providers_manager_resolves_them() -> None:
    from airflow.providers_manager import ProvidersManager

    with warnings.catch_warnings():  # deprecated in favour of the runtime manager from Airflow 3.2
        warnings.simplefilter("ignore")
        decorators = ProvidersManager().taskflow_decorators
    assert decorators["doitong"] is doitong_task and decorators["doitong_batch"] is doitong_batch_task


def test_task_dot_doitong_builds_the_decorated_operators() -> None:
    with _dag():

        @task.doitong(width=256, height=256)
        def hero() -> str:
            return "a hero"

        @task.doitong_batch(output_path="/tmp/images/")
        def batch() -> list[str]:
            return ["a", "b"]

        single, many = hero(), batch()
    assert type(single.operator) is DoitongDecoratedOperator and single.operator.width == 256
    assert type(many.operator) is DoitongBatchDecoratedOperator
    assert many.operator.output_path == "/tmp/images/"
    assert single.operator.custom_operator_name == "@task.doitong"


# --- what the decorator takes -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("decorator", "given"),
    [
        (doitong_task, {"prompt": "a fox"}),
        (doitong_task, {"prompt_file": "prompts/fox.txt"}),
        (doitong_batch_task, {"prompts": ["a fox"], "output_path": "/tmp/x/"}),
        (doitong_batch_task, {"prompts_file": "prompts.txt", "output_path": "/tmp/x/"}),
    ],
)
def test_the_prompts_come_only_from_the_function(decorator: Any, given: dict[str, Any]) -> None:
    with _dag(), pytest.raises(TypeError, match="from the decorated function's return value"):

        @decorator(**given)
        def make() -> str:
            return "a fox"

        make()


def test_a_misspelled_parameter_fails_when_the_dag_is_parsed() -> None:
    with _dag(), pytest.raises(TypeError, match="widht"):

        @task.doitong(widht=512)
        def make() -> str:
            return "a fox"

        make()


def test_the_operators_own_checks_run_when_the_dag_is_parsed() -> None:
    with _dag(), pytest.raises(ValueError, match="on_daily_limit"):

        @task.doitong(on_daily_limit="sometimes")
        def make() -> str:
            return "a fox"

        make()


def test_the_batch_form_needs_an_output_path() -> None:
    with _dag(), pytest.raises(TypeError, match="output_path"):

        @task.doitong_batch()
        def make() -> list[str]:
            return ["a fox"]

        make()


def test_the_function_arguments_are_checked_against_its_signature() -> None:
    with _dag(), pytest.raises(TypeError, match="subject"):

        @task.doitong()
        def make(subject: str) -> str:
            return subject

        make()


def test_arguments_are_rendered_but_never_read_as_template_files(tmp_path: pathlib.Path) -> None:
    """A ``.txt`` argument reaches the function as that string; templates in arguments render."""
    with DAG(
        "doitong_taskflow_render",
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
        template_searchpath=[str(tmp_path)],
    ):
        (tmp_path / "notes.txt").write_text("the file's text")

        @task.doitong(output_path="{{ params.root }}/hero/")
        def hero(notes: str, day: str) -> str:
            return notes

        @task.doitong_batch(output_path="{{ params.root }}/batch/")
        def batch(listing: str) -> pathlib.Path:
            return pathlib.Path(listing)

        single = hero("notes.txt", "{{ params.day }}").operator
        many = batch("notes.txt").operator
    context: Any = {"params": {"root": "/data", "day": "monday"}}
    single.render_template_fields(context)
    many.render_template_fields(context)
    assert list(single.op_args) == ["notes.txt", "monday"] and single.output_path == "/data/hero/"
    assert list(many.op_args) == ["notes.txt"] and many.output_path == "/data/batch/"
    assert "prompt" not in single.template_fields
    assert not {"prompts", "prompts_file"} & set(many.template_fields)


# --- what the function may return ---------------------------------------------------------------
def test_a_prompt_is_a_string() -> None:
    assert _prompt_fields("a fox in the snow") == {"prompt": "a fox in the snow"}
    # a string ending in .txt is a prompt like any other: the decorator never reads files for it
    assert _prompt_fields("prompts/fox.txt") == {"prompt": "prompts/fox.txt"}


@pytest.mark.parametrize("result", [["a fox"], None, 42, {"prompt": "a fox"}, b"a fox"])
def test_anything_but_a_string_is_refused_as_a_prompt(result: Any) -> None:
    with pytest.raises(AirflowFailException, match="must return the prompt as a string"):
        _prompt_fields(result)


def test_a_list_or_tuple_is_the_batch() -> None:
    items = ["a fox", {"prompt": "a heron", "width": 512}]
    assert _batch_fields(items) == {"prompts": items, "prompts_file": None}
    assert _batch_fields(("a fox", "a heron")) == {"prompts": ["a fox", "a heron"], "prompts_file": None}
    assert _batch_fields([]) == {"prompts": [], "prompts_file": None}


def test_a_path_is_a_prompts_file() -> None:
    assert _batch_fields(pathlib.Path("/data/prompts.txt")) == {
        "prompts": None,
        "prompts_file": "/data/prompts.txt",
    }
    assert _batch_fields(pathlib.PurePosixPath("prompts/day.jsonl"))["prompts_file"] == "prompts/day.jsonl"


def test_an_object_storage_path_keeps_its_connection() -> None:
    fields = _batch_fields(ObjectStoragePath("s3://aws_images@bucket/prompts/day.txt"))
    assert fields == {"prompts": None, "prompts_file": "s3://aws_images@bucket/prompts/day.txt"}


@pytest.mark.parametrize("result", ["prompts/day.txt", "a fox", '["a fox"]'])
def test_a_string_is_never_guessed_at(result: str) -> None:
    with pytest.raises(AirflowFailException, match=r"return pathlib\.Path"):
        _batch_fields(result)


@pytest.mark.parametrize("result", [None, {"prompts": ["a fox"]}, 3])
def test_anything_else_is_refused_as_a_batch(result: Any) -> None:
    with pytest.raises(AirflowFailException, match="list of prompts or items"):
        _batch_fields(result)


# --- resuming -------------------------------------------------------------------------------------
class _TaskInstance:
    """The few task instance calls a resume makes (pure bookkeeping, no Airflow behind it)."""

    map_index = -1

    def __init__(self, kept: Any) -> None:
        self.kept = kept
        self.pulls: list[dict[str, Any]] = []

    def xcom_pull(self, **kwargs: Any) -> Any:
        self.pulls.append(kwargs)
        return self.kept


def _decorated(decorator: Any, **kwargs: Any) -> Any:
    calls: list[int] = []
    with _dag():

        @decorator(**kwargs)
        def make() -> Any:
            calls.append(1)
            raise AssertionError("a resumed task must not run the function")

        op = make().operator
    return op, calls


def test_resuming_without_the_kept_result_fails_clearly() -> None:
    op, calls = _decorated(doitong_task)
    with pytest.raises(AirflowFailException, match=INPUT_XCOM_KEY):
        op.resume_execution("execute_complete", {"event": {}}, {"ti": _TaskInstance(None)})
    assert calls == []


def test_resuming_with_a_result_of_another_form_fails_clearly() -> None:
    op, _ = _decorated(doitong_batch_task, output_path="/tmp/x/")
    with pytest.raises(AirflowFailException, match=INPUT_XCOM_KEY):
        op.resume_execution("execute_complete", {"event": {}}, {"ti": _TaskInstance({"prompt": "a fox"})})


def test_a_failed_trigger_fails_the_task_without_reading_the_result() -> None:
    op, calls = _decorated(doitong_task)
    ti = _TaskInstance(None)
    with pytest.raises(Exception) as raised:  # noqa: B017 - its module differs between releases
        op.resume_execution("__fail__", {"error": "Trigger failure"}, {"ti": ti})
    assert type(raised.value).__name__ == "TaskDeferralError"
    assert ti.pulls == [] and calls == []


def test_a_resume_reads_its_own_try_and_map_index() -> None:
    op, calls = _decorated(doitong_task)
    ti = _TaskInstance({"prompt": "a fox"})
    ti.map_index = 3
    with pytest.raises(Exception):  # noqa: B017 - the event is not the trigger's; the prompt is set first
        op.resume_execution("execute_complete", {"event": {}}, {"ti": ti})
    assert op.prompt == "a fox" and calls == []
    assert ti.pulls == [{"task_ids": op.task_id, "key": INPUT_XCOM_KEY, "map_indexes": 3}]
