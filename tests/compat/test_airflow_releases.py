"""The provider on each supported Airflow release (3.0 to 3.4): the declared range, the compat layer,
and the batch that must work the same everywhere.

``python3 dev.py test-compat`` runs this module on every release; on the main one it runs in the
whole suite too.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from pathlib import Path
from typing import Any

import airflow
import pendulum
import pytest
from airflow.sdk import DAG
from packaging.version import Version
from PIL import Image

from airflow_provider_doitong import _compat
from airflow_provider_doitong.client import DoitongClient, ImageRequest
from airflow_provider_doitong.client.contract import PLANS
from airflow_provider_doitong.hooks.connection import CONN_FIELDS
from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from airflow_provider_doitong.triggers.doitong import DoitongJobTrigger
from doitong_emulator import FaultConfig
from tests.conftest import run_dag, task_states, xcom_value

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "airflow_provider_doitong"
#: The pinned dependency set of each tested release: the main one, then the matrix's.
CONSTRAINT_FILES = [REPO / "constraints.txt", *sorted((REPO / ".ci" / "constraints").glob("airflow-*.txt"))]
AIRFLOW = Version(airflow.__version__)
_ids = itertools.count()


def _airflow_pin(path: Path) -> Version:
    match = re.search(r"^apache-airflow==(\S+)$", path.read_text(), re.MULTILINE)
    assert match, f"{path.name} pins no apache-airflow"
    return Version(match.group(1))


def test_declared_floor_is_the_oldest_tested_release() -> None:
    tested = sorted(_airflow_pin(path) for path in CONSTRAINT_FILES)
    assert [v.release[:2] for v in tested] == [(3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]
    pyproject = (REPO / "pyproject.toml").read_text()
    floor = re.findall(r'"apache-airflow>=([^",;]+)"', pyproject)
    assert floor == [str(tested[0])]


def test_installed_airflow_is_the_tested_release() -> None:
    tested = {pin.release[:2]: pin for pin in map(_airflow_pin, CONSTRAINT_FILES)}
    assert AIRFLOW.release[:2] in tested, f"Airflow {AIRFLOW} is outside the supported range"
    assert tested[AIRFLOW.release[:2]] == AIRFLOW, "install from the release's pinned constraints"


def test_compat_layer_matches_the_release() -> None:
    assert _compat.DURABLE_RETRIES is (AIRFLOW >= Version("3.3"))


#: Names whose home or behaviour differs between the supported releases: only ``_compat`` imports them.
_MOVED = {
    "airflow.sdk": {"ResumableJobMixin", "BaseHook", "conf", "Connection"},
    "airflow.sdk.exceptions": None,  # every name: the module filled up between 3.0 and 3.2
    "airflow.sdk.log": None,
    "airflow.hooks.base": None,
    "airflow.exceptions": None,
    "airflow.configuration": None,
}


def _version_dependent_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in _MOVED:
            moved = _MOVED[node.module]
            names = [alias.name for alias in node.names if moved is None or alias.name in moved]
            found += [f"{node.module}.{name}" for name in names]
        elif isinstance(node, ast.Attribute) and node.attr in ("aget_connection", "task_state_store"):
            found.append(node.attr)
        elif isinstance(node, ast.Name) and node.id.startswith("AIRFLOW_V_"):
            found.append(node.id)
    return found


def test_only_the_compat_module_knows_release_differences() -> None:
    offenders = {
        str(path.relative_to(REPO)): names
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] != "_compat" and (names := _version_dependent_imports(path))
    }
    assert offenders == {}


#: Prints the ``doitong`` entry of what the UI's connection form is built from, as JSON. Airflow 3.0's
#: UI builds forms only where FAB is installed (any provider's); from 3.1 it stands in mocks for FAB
#: and WTForms where they are missing, and with ``stand-ins`` this does the same on 3.0.
_UI_FORM = """
import importlib.util, json, sys
from unittest.mock import MagicMock
missing = {top for top in ("wtforms", "flask_babel", "flask_appbuilder") if not importlib.util.find_spec(top)}
for name in ("wtforms", "wtforms.fields", "wtforms.fields.simple", "wtforms.validators", "flask_babel",
             "flask_appbuilder", "flask_appbuilder.fieldwidgets"):
    if sys.argv[1:] == ["stand-ins"] and name.split(".")[0] in missing:
        sys.modules[name] = MagicMock()
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
meta = {m.connection_type: m for m in HookMetaService.hook_meta_data()}["doitong"]
print("FORM=" + json.dumps(meta.model_dump(mode="json"), default=str))
"""


@pytest.mark.integration
def test_connection_form_as_the_ui_shows_it(airflow_home: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _UI_FORM, "stand-ins" if AIRFLOW < Version("3.1") else "-"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    form = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("FORM="))[5:])
    standard = form["standard_fields"]
    assert (standard["host"]["title"], standard["password"]["title"]) == ("Base URL", "API key")
    assert standard["login"]["hidden"] and standard["port"]["hidden"] and not standard["password"]["hidden"]
    extra = form["extra_fields"]
    assert set(extra) == set(CONN_FIELDS)
    assert {name: field["schema"]["title"] for name, field in extra.items()} == {
        name: field["label"] for name, field in CONN_FIELDS.items()
    }
    assert extra["plan"]["value"] is None and set(extra["plan"]["schema"]["enum"]) >= set(PLANS)
    assert extra["transport"]["value"] == "graphql"
    assert extra["webhook_secret"]["schema"]["format"] == "password"
    assert float(extra["timeout"]["value"]) == 30


def test_mapped_deferrable_batch_submits_each_prompt_once_and_stores_one_file_each(
    doitong_conn: Any, tmp_path: Path
) -> None:
    prompts = [f"a compat batch image, number {n}" for n in range(4)]
    with DAG(f"doitong_compat_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:
        FluxGenerateOperator.partial(
            task_id="generate",
            width=256,
            height=256,
            deferrable=True,
            poll_interval=0.1,
            output_path=f"{tmp_path}/",
        ).expand(prompt=prompts)
    run = run_dag(dag)
    assert task_states(run) == {f"generate[{n}]": "success" for n in range(len(prompts))}
    submits = [entry for entry in doitong_conn.request_log() if entry["kind"] == "submit"]
    assert len(submits) == len(prompts) and all(200 <= entry["status"] < 300 for entry in submits)
    assert doitong_conn.stats()["submissions_by_prompt"] == {prompt: 1 for prompt in prompts}
    results = [xcom_value(run, "generate", map_index=n) for n in range(len(prompts))]
    assert [result["prompt"] for result in results] == prompts
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(f"{r['job_id']}.jpg" for r in results)
    for result in results:
        with Image.open(result["output_path"]) as image:
            assert image.size == (256, 256)


def _submissions_after_two_failed_tries(deferrable: bool) -> int:
    if _compat.DURABLE_RETRIES:
        return 1  # the retry found the job in the task state store
    if deferrable and AIRFLOW < Version("3.1"):
        return 1  # 3.0 keeps a try's resume point: the retry replays the first try's failed wait
    return 2  # nothing survived the first try: the retry submitted (and paid for) a second job


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_what_a_retry_reattaches_to(doitong_conn: Any, deferrable: bool) -> None:
    """The job never finishes and each try gives up after 0.5 s; what the retry did differs by release."""
    doitong_conn.set_faults(FaultConfig(stuck_job_rate=1.0, seed=1))
    with DAG(f"doitong_compat_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:
        FluxGenerateOperator(
            task_id="generate",
            prompt="a retried image",
            width=256,
            height=256,
            deferrable=deferrable,
            poll_interval=0.1,
            timeout=0.5,
            retries=1,
            retry_delay=0,
        )
    run = run_dag(dag)
    assert task_states(run) == {"generate": "failed"}
    assert run.get_task_instances()[0].try_number == 2
    expected = _submissions_after_two_failed_tries(deferrable)
    assert doitong_conn.stats()["submissions_by_prompt"] == {"a retried image": expected}


def test_the_asset_consumer_takes_one_event_per_run_where_the_release_lets_it_choose(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """From 3.4 the scheduler reads the choice from the serialized DAG: one run per event, even where
    ``[scheduler] batch_asset_events`` is on. Before 3.4 a run takes every event queued before it."""
    from tests.examples._helpers import load_example

    monkeypatch.setenv("AIRFLOW__SCHEDULER__BATCH_ASSET_EVENTS", "True")
    dag = load_example("doitong_asset_consumer").dag
    condition = dag.timetable.asset_condition  # the asset on 3.4 and later, AssetAll(asset) before
    assert [asset.name for asset in getattr(condition, "objects", [condition])] == ["doitong_daily_images"]
    if AIRFLOW.release[:2] < (3, 4):  # a 3.4 pre-release is below Version("3.4")
        assert not hasattr(dag.timetable, "batch_asset_events")
        return
    from airflow.serialization.serialized_objects import DagSerialization

    scheduled = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert scheduled.timetable.batch_asset_events is False


@pytest.mark.skipif(AIRFLOW.release[:2] < (3, 4), reason="task group loops arrived in Airflow 3.4")
def test_each_iteration_of_a_loop_is_a_batch_of_its_own(
    doitong_conn: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Every iteration of a 3.4 loop runs the same task with the same map index (-1): a second one
    must neither take the first's ledger for its own (resubmitting nothing, reporting the first's
    images) nor overwrite its folder. In a folder of its own it runs its batch in full."""
    from airflow.sdk import task_group

    from airflow_provider_doitong.operators.batch import FluxBatchOperator

    prompts = ["a looped lighthouse", "a looped fox"]
    with DAG(f"doitong_compat_{next(_ids)}", schedule=None, start_date=pendulum.datetime(2025, 1, 1)) as dag:

        @task_group
        def looped() -> None:
            shared = FluxBatchOperator(
                task_id="shared", prompts=prompts, output_path=str(tmp_path / "shared"), poll_interval=0.1
            )
            shared >> FluxBatchOperator(
                task_id="own",
                prompts=prompts,
                output_path=str(tmp_path / "own" / "{{ loop.index }}"),
                poll_interval=0.1,
                trigger_rule="all_done",
            )

        looped.loop(max_iterations=2)
    run = run_dag(dag)
    states = {(ti.task_id, ti.region_index): str(ti.state) for ti in run.get_task_instances()}
    assert states[("looped.shared", 0)] == "success" and states[("looped.shared", 1)] == "failed"
    assert states[("looped.own", 0)] == states[("looped.own", 1)] == "success"
    assert "holds the batch of" in capfd.readouterr().out
    assert doitong_conn.stats()["submissions_by_prompt"] == {prompt: 3 for prompt in prompts}
    for folder in (tmp_path / "shared", tmp_path / "own" / "0", tmp_path / "own" / "1"):
        assert len(json.loads((folder / "manifest.json").read_text())["items"]) == len(prompts)


def test_trigger_rebuilt_from_its_kwargs_reattaches_to_the_same_job(doitong_conn: Any) -> None:
    """What a triggerer restart does on every release: the trigger comes back from its kwargs alone."""
    import asyncio

    from airflow_provider_doitong.triggers import events

    with DoitongClient(base_url=doitong_conn.base_url, api_key=doitong_conn.api_key) as client:
        job_id = client.submit(ImageRequest(provider="flux-krea", prompt="rebuilt", width=256, height=256)).id
    classpath, kwargs = DoitongJobTrigger(job_id=job_id, poll_interval=0.05).serialize()
    assert classpath == "airflow_provider_doitong.triggers.doitong.DoitongJobTrigger"
    rebuilt = DoitongJobTrigger(**kwargs)

    async def first_event() -> dict[str, Any]:
        return (await rebuilt.run().asend(None)).payload

    status, event_job_id, job, _ = events.read_event(asyncio.run(first_event()))
    assert (status, event_job_id) == (events.SUCCESS, job_id) and job is not None and job.url
    assert doitong_conn.stats()["submissions_by_prompt"] == {"rebuilt": 1}
