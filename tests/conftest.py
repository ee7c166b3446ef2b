"""Shared test set-up: an isolated Airflow home with its own database, and a real emulator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from doitong_emulator.pytest_plugin import EmulatorFactory

# Airflow reads its configuration at import, so the isolated home is set before anything imports it.
_HOME = Path(os.environ.get("DOITONG_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="doitong-airflow-"))
(_HOME / "dags").mkdir(parents=True, exist_ok=True)
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(_HOME / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # A deferred single-image wait is resumed no sooner than this after its deferral (8 s by
        # default, for Airflow's resume race); 1 s keeps the rule in every test's path at less cost.
        "AIRFLOW__DOITONG__DEFERRAL_SETTLE_SECONDS": "1",
        # The boards on which processes tell each other that an account's window is spent: the
        # session's own (each test gets one of its own below), never the user's.
        "DOITONG_BOARD_DIR": str(_HOME / "board"),
    }
)
os.environ.pop("AIRFLOW_CONN_DOITONG_DEFAULT", None)

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """``--unit``, and the lanes as a plugin of the whole session (``tests`` and ``emulator/tests``)."""
    from tests import lanes

    lanes.add_options(parser)
    pluginmanager.register(lanes, "doitong-lanes")


#: Set by a session that made its database, for the worker processes it starts (pytest-xdist) and for
#: the real Airflows the tests start (``tests/support/airflow_cluster.py``): a freshly migrated database
#: that each copies instead of migrating again. A copy of its own, never written by a test.
_TEMPLATE_DB = "DOITONG_TEST_AIRFLOW_DB"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist starts its workers, which read the template
def pytest_sessionstart(session: pytest.Session) -> None:
    if session.config.getoption("unit"):
        return  # the unit lane has no Airflow database (lanes.py refuses one)
    database = _HOME / "airflow.db"
    template = os.environ.get(_TEMPLATE_DB)
    if database.exists():
        pass
    elif os.environ.get("PYTEST_XDIST_WORKER") and template and Path(template).is_file():
        shutil.copyfile(template, database)
    else:
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=os.environ.copy(),
        )
        shutil.copyfile(database, _HOME / "migrated.db")
        os.environ[_TEMPLATE_DB] = str(_HOME / "migrated.db")


#: Tests that start a real Airflow (api-server, scheduler, dag-processor, triggerer, LocalExecutor: one
#: per module or package), by node id prefix, and their group. ``dev.py test`` spreads the suite over
#: several workers; a group stays on one worker and is handed out before any other test, since each
#: group is the longest piece of work of the suite. Two groups: at most two such Airflows at once, each
#: beside the workers that run the rest (more at once starved them on two cores: lost heartbeats).
SHARED_AIRFLOW = {
    "tests/faults/": "airflow-faults",
    "tests/e2e/test_end_to_end.py": "airflow-faults",
    "tests/e2e/test_batch_end_to_end.py": "airflow-examples",
    "tests/e2e/test_batch_kill_in_flight.py": "airflow-examples",
    "tests/e2e/test_examples_over_rest.py": "airflow-examples",
    "tests/ui/test_browser.py": "airflow-examples",
}


#: The slowest modules of the rest (a minute or more of waiting each), handed out right after the
#: groups above, so that none of them is left alone at the end of the run. The lineage test comes
#: before the packaging test: building the packages leaves ``airflow_provider_doitong.egg-info`` in the
#: source tree, and with that second copy of the provider's metadata on the path the lineage test's
#: ``dag.test()`` subprocess reports no task events.
SLOW_FIRST = (
    "tests/operators/test_lineage.py",
    "tests/operators/test_flux_operator.py",
    "tests/batch/test_batch_operator.py",
    "tests/operators/test_flux_waiting.py",
    "tests/decorators/test_taskflow_runs.py",
    "tests/observability/test_receivers.py",
    "tests/operators/test_stale_resets.py",
    "tests/test_packaging.py",
)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """With ``--dist loadgroup``, keep each group of :data:`SHARED_AIRFLOW` on one worker.

    The groups are handed out first, then :data:`SLOW_FIRST`, then the rest (most tests first); a
    worker still running a group's last tests is given the smallest unit left.

    pytest-xdist's own ``xdist_group`` mark has no effect from pytest 9.2 on (it appends the group to
    the node id, which pytest 9.2 no longer lets a plugin change), so the groups go by node id here.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    groups = sorted(set(SHARED_AIRFLOW.values()))
    first = [*groups, *SLOW_FIRST]

    class SharedAirflowScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            group = next((g for prefix, g in SHARED_AIRFLOW.items() if nodeid.startswith(prefix)), None)
            return group or super()._split_scope(nodeid)

        def _assign_work_unit(self, node: object) -> None:
            for scope in reversed(first):
                if scope in self.workqueue:
                    self.workqueue.move_to_end(scope, last=False)
            held = self.assigned_work.get(node, {})  # type: ignore[call-overload]
            if any(not all(held[group].values()) for group in groups if group in held):
                # behind the last tests of a group: the smallest unit left (the queue ends with them)
                self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
            super()._assign_work_unit(node)  # type: ignore[arg-type]

    return SharedAirflowScheduling(config, log)


@pytest.fixture
def airflow_home() -> Path:
    """The isolated ``AIRFLOW_HOME`` of this test session."""
    return _HOME


@pytest.fixture(autouse=True)
def _own_window_boards(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's processes tell each other of spent windows on a board no other test reads (an
    emulator's port may be reused, and its window starts afresh), outside the test's own folder."""
    monkeypatch.setenv("DOITONG_BOARD_DIR", str(tmp_path_factory.mktemp("boards") / "board"))


@pytest.fixture
def emulator(doitong_emulators: EmulatorFactory) -> Iterator[object]:
    """A fresh Doitong emulator on loopback: pro plan, 20 s jobs at a 0.02 time scale (0.4 s)."""
    with doitong_emulators(plan="pro", time_scale=0.02, job_seconds=20, credits=100_000) as emu:
        yield emu


def conn_json(emu: object, **extra: object) -> str:
    """The JSON form of a ``doitong`` connection to an emulator.

    :param emu: a running emulator.
    :param extra: connection extras.
    """
    return json.dumps(
        {"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key, "extra": extra}  # type: ignore[attr-defined]
    )


@pytest.fixture
def doitong_conn(emulator: object, monkeypatch: pytest.MonkeyPatch) -> object:
    """``doitong_default`` pointing at the emulator, as an environment-variable connection."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_DOITONG_DEFAULT", conn_json(emulator, webhook_secret=emulator.webhook_secret)
    )  # type: ignore[attr-defined]
    return emulator


def run_dag(dag: object, **kwargs: object) -> object:
    """Run a DAG built in a test with ``dag.test()``, as Airflow would run a parsed one.

    The DAG is written to the metadata database first, as the DAG processor would do.

    :param dag: the DAG.
    :param kwargs: passed to ``dag.test()``.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    from tests.airflow_versions import dagbag_module, share_the_in_process_execution_api, sync_dag_to_db

    share_the_in_process_execution_api()
    DagBundlesManager().sync_bundles_to_db()
    bag = dagbag_module().DagBag(dag_folder=str(_HOME / "dags"))
    bag.bag_dag(dag)  # type: ignore[arg-type]
    sync_dag_to_db(bag)
    return dag.test(**kwargs)  # type: ignore[attr-defined]


def task_states(dag_run: object) -> dict[str, str]:
    """``{task_id or task_id[map_index]: state}`` of a finished run.

    :param dag_run: what ``dag.test()`` returned.
    """
    states = {}
    for ti in dag_run.get_task_instances():  # type: ignore[attr-defined]
        key = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
        states[key] = str(ti.state.value if hasattr(ti.state, "value") else ti.state)
    return states


def xcom_value(dag_run: object, task_id: str, map_index: int = -1, key: str = "return_value") -> object:
    """A task's XCom value from a finished ``dag.test()`` run.

    :param dag_run: what ``dag.test()`` returned.
    :param task_id: the task.
    :param map_index: the mapped index, or -1.
    :param key: the XCom key.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id,  # type: ignore[attr-defined]
                dag_ids=dag_run.dag_id,  # type: ignore[attr-defined]
                task_ids=task_id,
                map_indexes=map_index,
                key=key,
            )
        ).first()
        return XComModel.deserialize_value(row) if row is not None else None
