"""The human-approval example in real Airflow: ``dag.test()`` against the emulator, answered by a person.

On Airflow 3.3 the ``review`` task waits in the ``awaiting_input`` state and ``dag.test()`` waits
with it until an answer arrives from outside. The reviewer here answers as the UI does: through
Airflow's own REST API (``PATCH .../taskInstances/review/-1/hitlDetails``), served in-process by the
real API app over the test session's metadata database, from a second thread.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_dag, task_states, xcom_value
from tests.examples._helpers import load_example, submissions

hitl = pytest.importorskip("airflow.providers.standard.operators.hitl", reason="needs Airflow 3.1+")
# The all-admins tokens are signed with the test home's generated key, shorter than PyJWT recommends.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
PROMPTS = ["a kite over dunes", "a teapot on a windowsill", "a heron in the reeds"]


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
            ti = self.request["task_instance"]
            self.response = self.api.patch(
                f"/api/v2/dags/{self.dag_id}/dagRuns/{ti['dag_run_id']}/taskInstances/"
                f"{ti['task_id']}/{ti['map_index']}/hitlDetails",
                json=self.answer(self.request),
            )
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc


def _run_reviewed(
    example: Any, api: Any, answer: Callable[[dict[str, Any]], dict[str, Any]], tmp_path: Path
) -> tuple[Any, Reviewer]:
    reviewer = Reviewer(api, example.DAG_ID, answer)
    reviewer.start()
    run = run_dag(
        example.dag,
        run_conf={
            "prompts": PROMPTS,
            "width": 256,
            "height": 256,
            "poll_interval": 0.1,
        },
    )
    reviewer.join(timeout=30)
    assert reviewer.error is None, reviewer.error
    assert reviewer.response is not None and reviewer.response.status_code == 200, reviewer.response.text
    return run, reviewer


def _files_listed(body: str) -> list[str]:
    return re.findall(r"^\| `([^`]+)` \|", body, re.MULTILINE)


def test_approved_images_are_published_and_a_left_out_one_is_not(
    example: Any, api: Any, doitong_conn: Any, tmp_path: Path
) -> None:
    def approve_all_but_the_second(request: dict[str, Any]) -> dict[str, Any]:
        return {
            "chosen_options": ["Approve"],
            "params_input": {"rejected_images": [_files_listed(request["body"])[1]]},
        }

    run, reviewer = _run_reviewed(example, api, approve_all_but_the_second, tmp_path)
    assert task_states(run) == {
        **{f"generate[{n}]": "success" for n in range(3)},
        "plan": "success",
        "contact_sheet": "success",
        "review": "success",
        "publish": "success",
    }
    sheet = xcom_value(run, "contact_sheet")
    day = sheet["day"]  # a manual run: its date and time
    assert day.startswith(run.logical_date.strftime("%Y-%m-%d") + "-manual-")
    drafts = tmp_path / "review" / "drafts" / day
    files = [image["file"] for image in sheet["images"]]
    assert sorted(files) == sorted(p.name for p in drafts.glob("*.jpg")) and len(files) == 3
    assert (drafts / "index.html").read_text().count("<figure>") == 3
    assert submissions(doitong_conn) == 3

    # What the reviewer was shown: the day, where the contact sheet is, every image and its prompt.
    shown = reviewer.request
    assert shown is not None
    assert shown["subject"] == f"Publish the Doitong images of {day}?"
    assert shown["options"] == ["Approve", "Reject"] and shown["defaults"] == ["Reject"]
    assert str(drafts / "index.html") in shown["body"]
    assert _files_listed(shown["body"]) == files
    for image in sheet["images"]:
        assert image["prompt"] in shown["body"]
    assert "rejected_images" in shown["params"]

    left_out = files[1]
    published = tmp_path / "review" / "published" / day
    assert sorted(p.name for p in published.glob("*.jpg")) == sorted(set(files) - {left_out})
    for name in set(files) - {left_out}:
        assert (published / name).read_bytes() == (drafts / name).read_bytes()
    record = json.loads((published / "publication.json").read_text())
    assert record["rejected"] == [left_out]
    assert [image["file"] for image in record["images"]] == [f for f in files if f != left_out]
    assert record["approved_by"]  # who answered, as Airflow recorded it
    assert xcom_value(run, "review")["chosen_options"] == ["Approve"]


def test_a_rejected_sheet_publishes_nothing(
    example: Any, api: Any, doitong_conn: Any, tmp_path: Path
) -> None:
    run, reviewer = _run_reviewed(example, api, lambda _request: {"chosen_options": ["Reject"]}, tmp_path)
    states = task_states(run)
    assert states["review"] == "success" and states["contact_sheet"] == "success"
    assert states["publish"] == "skipped"
    assert not (tmp_path / "review" / "published").exists()
    drafts = tmp_path / "review" / "drafts"
    assert len(list(drafts.glob("*/*.jpg"))) == 3  # the drafts stay for a look later
    # The answer as Airflow keeps it (a rejecting ApprovalOperator skips downstream and returns no XCom).
    ti = reviewer.request["task_instance"] if reviewer.request else {}
    kept = api.get(
        f"/api/v2/dags/{example.DAG_ID}/dagRuns/{ti['dag_run_id']}/taskInstances/review/-1/hitlDetails"
    )
    assert kept.json()["chosen_options"] == ["Reject"] and kept.json()["response_received"] is True


def test_shape(example: Any) -> None:
    dag = example.dag
    review = dag.get_task("review")
    assert isinstance(review, hitl.ApprovalOperator)
    assert review.defaults == ["Reject"] and review.response_timeout == example.REVIEW_TIMEOUT
    assert review.upstream_task_ids == {"contact_sheet"} and review.downstream_task_ids == {"publish"}
    assert [asset.name for asset in dag.get_task("publish").outlets] == ["doitong_published_images"]
    assert dag.get_task("generate").partial_kwargs["deferrable"] is True


def test_a_name_not_on_the_sheet_publishes_nothing(example: Any) -> None:
    entries = [{"file": "a.jpg"}, {"file": "b.jpg"}]
    assert example.approved_entries(entries, ["b.jpg", " "]) == [{"file": "a.jpg"}]
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException, match="not on the contact sheet"):
        example.approved_entries(entries, ["c.jpg"])


def test_without_human_in_the_loop_the_example_skips_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, doitong_conn: Any
) -> None:
    # As on Airflow 3.0, where importing the operators fails.
    monkeypatch.setitem(sys.modules, "airflow.providers.standard.operators.hitl", None)
    example = load_example("doitong_review_and_publish")
    assert "Airflow 3.1+" in example.HITL_UNAVAILABLE
    assert example.dag.task_ids == ["hitl_unavailable"]
    run = run_dag(example.dag)
    assert task_states(run) == {"hitl_unavailable": "skipped"}
    assert submissions(doitong_conn) == 0
