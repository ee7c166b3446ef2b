"""The human-approval example in real Airflow: ``dag.test()`` against the emulator, answered by a person.

On Airflow 3.3 and later the batch's ``generate`` task, once its images are stored, waits in the
``awaiting_input`` state and ``dag.test()`` waits with it until an answer arrives from outside. The
reviewer here answers as the UI does: through Airflow's own REST API
(``PATCH .../taskInstances/generate/-1/hitlDetails``), served in-process by the real API app over
the test session's metadata database, from a second thread. On 3.1 and 3.2, where ``dag.test()``
cannot wait for a person (``tests/batch/test_batch_review.py`` shows it refusing), the same answers
come over REST to a real Airflow in ``tests/e2e/test_examples_over_rest.py``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong import _compat
from airflow_provider_doitong.batch.manifest import read_manifest, verify_manifest
from tests.conftest import run_dag, task_states, xcom_value
from tests.examples._helpers import load_example, submissions

if _compat.HUMAN_REVIEW_UNAVAILABLE:
    pytest.skip(_compat.HUMAN_REVIEW_UNAVAILABLE, allow_module_level=True)
# The all-admins tokens are signed with the test home's generated key, shorter than PyJWT recommends.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
PROMPTS = ["a kite over dunes", "a teapot on a windowsill", "a heron in the reeds"]
in_dag_test = pytest.mark.skipif(
    not _compat.AWAITS_INPUT, reason="dag.test() waits for a person from Airflow 3.3 (3.1, 3.2: tests/e2e)"
)


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("DOITONG_OUTPUT_ROOTS", str(tmp_path))
    return load_example("doitong_review_and_publish")


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    """A client of Airflow's REST API app, every caller an admin (the simple auth manager's mode)."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
        client = TestClient(create_app(apps="core"))
        yield client
        client.close()
        purge_cached_app()


class _Parked(logging.Handler):
    """Set once ``dag.test()`` has parked the paused task and waits for an answer from outside.

    ``dag.test()`` writes the task's final state (``awaiting_input``) itself after the task's process
    has ended: an answer given before that (it turns the state to ``scheduled``) would be overwritten,
    and the run would wait forever. A person cannot be that quick; the reviewer waits for this.
    """

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Waiting for Human-in-the-loop input"):
            self.event.set()


class Reviewer(threading.Thread):
    """Waits for the DAG's pending approval request, keeps what it showed, and answers it.

    :param answer: builds the answer (``chosen_options``, ``params_input``) from the request shown,
        as a person decides after reading it.
    """

    def __init__(
        self,
        api: Any,
        dag_id: str,
        answer: Callable[[dict[str, Any]], dict[str, Any]],
        timeout: float = 120.0,
    ) -> None:
        super().__init__(daemon=True)
        self.api, self.dag_id, self.answer, self.timeout = api, dag_id, answer, timeout
        self.request: dict[str, Any] | None = None
        self.response: Any = None
        self.parked = _Parked()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + self.timeout
            while self.request is None and time.monotonic() < deadline:
                listed = self.api.get(
                    f"/api/v2/dags/{self.dag_id}/dagRuns/~/hitlDetails", params={"response_received": False}
                )
                listed.raise_for_status()
                pending = listed.json()["hitl_details"]
                if pending:
                    self.request = pending[0]
                else:
                    time.sleep(0.3)
            if self.request is None:
                raise TimeoutError("no approval request appeared")
            if not self.parked.event.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("dag.test() did not wait for the answer")
            ti = self.request["task_instance"]
            self.response = self.api.patch(
                f"/api/v2/dags/{self.dag_id}/dagRuns/{ti['dag_run_id']}/taskInstances/"
                f"{ti['task_id']}/{ti['map_index']}/hitlDetails",
                json=self.answer(self.request),
            )
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc


def _run_reviewed(
    example: Any, api: Any, answer: Callable[[dict[str, Any]], dict[str, Any]]
) -> tuple[Any, Reviewer]:
    reviewer = Reviewer(api, example.DAG_ID, answer)
    dag_log = logging.getLogger("airflow.sdk.definitions.dag")
    dag_log.addHandler(reviewer.parked)
    reviewer.start()
    try:
        run = run_dag(example.dag, run_conf={"prompts": PROMPTS})
    finally:
        dag_log.removeHandler(reviewer.parked)
    reviewer.join(timeout=30)
    assert reviewer.error is None, reviewer.error
    assert reviewer.response is not None and reviewer.response.status_code == 200, reviewer.response.text
    return run, reviewer


def _files_listed(body: str) -> list[str]:
    return re.findall(r"^\| `([^`]+)` \|", body, re.MULTILINE)


def _folder(tmp_path: Path) -> Path:
    (folder,) = (tmp_path / "review").iterdir()
    return folder


@in_dag_test
def test_an_approved_batch_succeeds_and_its_manifest_records_who_approved(
    example: Any, api: Any, doitong_conn: Any, tmp_path: Path
) -> None:
    run, reviewer = _run_reviewed(example, api, lambda _request: {"chosen_options": ["Approve"]})
    assert task_states(run) == {"folder": "success", "generate": "success"}
    folder = _folder(tmp_path)
    assert folder.name.startswith(run.logical_date.strftime("%Y-%m-%d") + "-manual-")
    doc = read_manifest(str(folder))
    assert doc is not None and verify_manifest(str(folder)) == []
    files = [entry["file"] for entry in doc["items"]]
    assert sorted(entry["prompt"] for entry in doc["items"]) == sorted(PROMPTS)
    assert submissions(doitong_conn) == 3

    # What the reviewer was shown: the contact sheet's page and file, every image and its prompt.
    shown = reviewer.request
    assert shown is not None
    assert shown["options"] == ["Approve", "Reject"] and shown["defaults"] == ["Reject"]
    assert "/doitong/batch?" in shown["body"] and str(folder / "index.html") in shown["body"]
    assert _files_listed(shown["body"]) == files
    assert all(prompt in shown["body"] for prompt in PROMPTS)

    # Who approved, and when, as Airflow recorded the answer; in the manifest, the XCom and the sheet.
    kept = api.get(
        f"/api/v2/dags/{example.DAG_ID}/dagRuns/{run.run_id}/taskInstances/generate/-1/hitlDetails"
    )
    user = kept.json()["responded_by_user"]
    review = doc["review"]
    assert review["decision"] == "approved" and review["timed_out"] is False
    assert (review["by"], review["by_id"]) == (user["name"], str(user["id"]))
    assert review["at"][:19] == kept.json()["responded_at"][:19]
    assert xcom_value(run, "generate")["review"] == review
    assert "approved by" in (folder / "index.html").read_text()


@in_dag_test
def test_a_rejected_batch_fails_and_keeps_its_images(
    example: Any, api: Any, doitong_conn: Any, tmp_path: Path
) -> None:
    run, _reviewer = _run_reviewed(example, api, lambda _request: {"chosen_options": ["Reject"]})
    assert task_states(run) == {"folder": "success", "generate": "failed"}
    folder = _folder(tmp_path)
    assert len(list(folder.glob("*.jpg"))) == 3  # the images stay for a look later
    doc = read_manifest(str(folder))
    assert doc is not None and verify_manifest(str(folder)) == []
    assert doc["review"]["decision"] == "rejected" and doc["review"]["by"]
    assert submissions(doitong_conn) == 3


def test_shape(example: Any) -> None:
    generate = example.dag.get_task("generate")
    assert type(generate).__name__ == "FluxBatchOperator"
    assert generate.require_approval is True and generate.on_approval_timeout == "reject"
    assert generate.approval_timeout == example.REVIEW_TIMEOUT and generate.deferrable is True
    assert [asset.name for asset in generate.outlets] == ["doitong_reviewed_images"]
    assert len(Path(example.__file__).read_text().splitlines()) <= 120


def test_without_human_in_the_loop_the_example_skips_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, doitong_conn: Any
) -> None:

    # As on Airflow 3.0, which has no human-in-the-loop requests.
    monkeypatch.setattr(_compat, "HUMAN_REVIEW_UNAVAILABLE", "needs Airflow 3.1+")
    example = load_example("doitong_review_and_publish")
    assert example.dag.task_ids == ["review_unavailable"]
    run = run_dag(example.dag)
    assert task_states(run) == {"review_unavailable": "skipped"}
    assert submissions(doitong_conn) == 0
