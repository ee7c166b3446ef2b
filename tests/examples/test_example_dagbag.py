"""Every example DAG file parses in a ``DagBag``, cheaply, with the documented shape."""

from __future__ import annotations

import builtins
import pathlib
import time
from typing import Any

import pytest

from tests.examples._helpers import EXAMPLES, load_example

EXPECTED_DAG_IDS = {
    "doitong_daily_prompt_batch",
    "doitong_mapped_batch",
    "doitong_asset_consumer",
    "doitong_submit_then_sense",
    "doitong_webhook",
    "doitong_review_and_publish",
    "doitong_taskflow",
}


@pytest.fixture(scope="module")
def bag() -> Any:
    from tests.airflow_versions import dagbag_module

    return dagbag_module().DagBag(dag_folder=str(EXAMPLES))


def test_every_example_imports(bag: Any) -> None:
    assert bag.import_errors == {}
    assert set(bag.dags) == EXPECTED_DAG_IDS


def test_receiver_and_demo_are_not_parsed_as_dag_files(bag: Any) -> None:
    parsed = {stat.file.rsplit("/", 1)[-1] for stat in bag.dagbag_stats}
    assert parsed == {f"{dag_id}.py" for dag_id in EXPECTED_DAG_IDS}
    ignore = (EXAMPLES / ".airflowignore").read_text().split()
    assert {"webhook_receiver.py", "run_demo.py"} <= set(ignore)


def test_daily_batch_shape(bag: Any) -> None:
    dag = bag.dags["doitong_daily_prompt_batch"]
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert dag.schedule == "@daily"
    assert set(dag.params) >= {"prompts_file", "output_root", "provider", "width", "height", "quality"}
    assert dag.params["budget_credits"] is None
    generate = dag.get_task("generate")
    assert type(generate).__name__ == "FluxBatchOperator"
    assert generate.deferrable is True and generate.retries == 2
    assert dag.get_task("plan_day").downstream_task_ids == {"generate"}
    assert [asset.name for asset in generate.outlets] == ["doitong_daily_images"]
    assert len((EXAMPLES / "doitong_daily_prompt_batch.py").read_text().splitlines()) <= 120


def test_mapped_batch_shape(bag: Any) -> None:
    dag = bag.dags["doitong_mapped_batch"]
    generate = dag.get_task("generate")
    assert generate.partial_kwargs["pool"] == "doitong" and generate.partial_kwargs["deferrable"] is True
    assert dag.get_task("contact_sheet").upstream_task_ids == {"generate", "folder"}


def test_consumer_is_scheduled_on_the_batch_asset(bag: Any) -> None:
    batch = load_example("doitong_daily_prompt_batch")
    consumer = load_example("doitong_asset_consumer")
    assert consumer.DAILY_IMAGES == batch.DAILY_IMAGES
    dag = bag.dags["doitong_asset_consumer"]
    condition = dag.timetable.asset_condition  # the asset on 3.4 and later, AssetAll(asset) before
    assert [asset.name for asset in getattr(condition, "objects", [condition])] == ["doitong_daily_images"]


@pytest.mark.parametrize("name", sorted(EXPECTED_DAG_IDS))
def test_parsing_reads_no_files(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    load_example(name)  # warm the provider and Airflow imports

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"file I/O while parsing {name}: {args[:1]}")

    monkeypatch.setattr(builtins, "open", refuse)
    monkeypatch.setattr(pathlib.Path, "read_text", refuse)
    monkeypatch.setattr(pathlib.Path, "read_bytes", refuse)
    started = time.perf_counter()
    module = load_example(name)
    assert time.perf_counter() - started < 1.0
    assert module.dag.dag_id == name


def _required_in_the_trigger_form(schema: dict[str, Any]) -> bool:
    """The rule of Airflow's Trigger form: a param is required unless its type allows ``null``."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_the_trigger_form_is_valid_as_shipped(bag: Any, dag_id: str) -> None:
    """Every param's default satisfies its schema, and no required one is empty (the button stays on)."""
    params = bag.dags[dag_id].params
    params.validate()
    for name in params:
        param = params.get_param(name)
        if _required_in_the_trigger_form(param.schema):
            assert param.value not in (None, ""), f"{dag_id}: {name} is required and empty"
