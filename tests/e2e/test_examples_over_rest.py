"""Every example DAG, started the ways a person starts one, in a real Airflow against the emulator.

One Airflow (api-server, scheduler with LocalExecutor, dag-processor, triggerer: each its own
process) serves ``example_dags/`` as shipped, unpaused as it is created, so the scheduled examples
start their latest day at once. Each example is started through the REST API as the UI's Trigger
button does: ``POST /api/v2/dags/{id}/dagRuns`` with ``"logical_date": null`` and the form's
defaults as the conf (read from the DAG's details, the params the form shows). The daily batch is
also run scheduled, from ``airflow dags trigger`` without a logical date, and in a backfill. The
TaskFlow example's decorated tasks wait in the triggerer. Each run's images are checked against its
manifest with the provider's manifest API.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from airflow_provider_doitong import _compat
from airflow_provider_doitong.batch.manifest import STORED, read_manifest, verify_manifest
from airflow_provider_doitong.client.safety import safe_component
from airflow_provider_doitong.client.webhooks import SIGNATURE_HEADER, verify_signature
from doitong_emulator import DoitongEmulator
from tests.conftest import REPO
from tests.examples._helpers import DEFAULT_PROMPTS, prompts_in
from tests.support.airflow_cluster import AirflowCluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

EXAMPLES = REPO / "example_dags"
DAILY, CONSUMER, MAPPED = "doitong_daily_prompt_batch", "doitong_asset_consumer", "doitong_mapped_batch"
SENSE, WEBHOOK, REVIEW = "doitong_submit_then_sense", "doitong_webhook", "doitong_review_and_publish"
TASKFLOW, TASKFLOW_STYLES = "doitong_taskflow", ("watercolour", "woodcut print", "neon sign")


class WebhookInbox(http.server.ThreadingHTTPServer):
    """A loopback endpoint that keeps every POST it receives: ``(signature header, body)``."""

    def __init__(self) -> None:
        self.received: list[tuple[str | None, bytes]] = []
        inbox = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the standard library's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                inbox.received.append((self.headers.get(SIGNATURE_HEADER), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/doitong/webhook"


class Api:
    """Airflow's REST API as a logged-in user (the simple auth manager's all-admins token)."""

    def __init__(self, port: int) -> None:
        base = f"http://127.0.0.1:{port}"
        token = httpx.get(f"{base}/auth/token", timeout=60).raise_for_status().json()["access_token"]
        self.http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    def get(self, path: str, **params: Any) -> Any:
        return self.http.get(path, params=params).raise_for_status().json()

    def form_defaults(self, dag_id: str) -> dict[str, Any]:
        """The conf the Trigger form sends untouched; fails where the form would disable its button."""
        params = self.get(f"/api/v2/dags/{dag_id}/details")["params"]
        for name, param in params.items():
            kind = param.get("schema", {}).get("type")
            required = bool(kind) and not (isinstance(kind, list) and "null" in kind)
            assert not (required and param["value"] in (None, "")), f"{dag_id}: {name} required and empty"
        return {name: param["value"] for name, param in params.items()}

    def trigger(self, dag_id: str) -> dict[str, Any]:
        """Start a run as the Trigger button does: no logical date, the form's defaults.

        An answer 5xx that created no run is tried again, as a person clicks again: on a loaded
        machine Airflow's SQLite metadata database can refuse a write (its lock held too long).
        """
        body = {"logical_date": None, "conf": self.form_defaults(dag_id)}
        before = {r["dag_run_id"] for r in self.runs(dag_id, "manual")}
        for _ in range(3):
            answer = self.http.post(f"/api/v2/dags/{dag_id}/dagRuns", json=body)
            if answer.status_code < 500:
                break
            time.sleep(2)
            created = [r for r in self.runs(dag_id, "manual") if r["dag_run_id"] not in before]
            if created:
                return self._manual(created[0])
        assert answer.status_code == 200, answer.text
        return self._manual(answer.json())

    @staticmethod
    def _manual(run: dict[str, Any]) -> dict[str, Any]:
        assert run["logical_date"] is None and run["run_type"] == "manual"
        return run

    def runs(self, dag_id: str, run_type: str) -> list[dict[str, Any]]:
        listed = self.get(f"/api/v2/dags/{dag_id}/dagRuns", run_type=run_type, order_by="id")
        return list(listed["dag_runs"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """``{task_id or task_id[map_index]: state}`` (run ids are unique per DAG only: ask by both)."""
        listed = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)
        return {
            ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]": str(ti["state"])
            for ti in listed["task_instances"]
        }

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        value = self.get(path, deserialize=True)["value"]
        return json.loads(value) if isinstance(value, str) else value


@dataclass
class Setup:
    """The shared Airflow, its REST API, the emulator, the output root and the webhook endpoint."""

    cluster: AirflowCluster
    api: Api
    emu: DoitongEmulator
    images: Path
    inbox: WebhookInbox


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("examples-rest")
    with (
        DoitongEmulator(plan="pro", time_scale=0.05, job_seconds=20, credits=100_000) as emu,
        WebhookInbox() as inbox,
    ):
        threading.Thread(target=inbox.serve_forever, daemon=True).start()
        conn = {"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key}
        conn["extra"] = {"plan": "pro", "webhook_secret": emu.webhook_secret}
        env = {
            "AIRFLOW_CONN_DOITONG_DEFAULT": json.dumps(conn),
            "DOITONG_OUTPUT_ROOTS": str(root / "images"),
            "DOITONG_WEBHOOK_URL": inbox.url,
        }
        with AirflowCluster(home=root / "airflow", dags_folder=EXAMPLES, env=env) as cluster:
            cluster.create_pool("doitong", 10)
            yield Setup(cluster, Api(cluster.port), emu, root / "images", inbox)
            inbox.shutdown()
            assert emu.api_key not in cluster.task_logs()


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise TimeoutError(f"timed out waiting for {what}")


def finished(airflow: Setup, dag_id: str, run_id: str) -> None:
    """Wait for a run to end, and fail with its task states and logs unless it succeeded."""

    def ended() -> str | None:
        state = str(airflow.api.run(dag_id, run_id)["state"])
        return state if state in ("success", "failed") else None

    state = wait_until(ended, f"{dag_id} {run_id} to finish")
    if state != "success":
        folder = airflow.cluster.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        logs = "\n".join(p.read_text(errors="replace")[-2500:] for p in sorted(folder.rglob("*.log")))
        pytest.fail(f"{dag_id} {run_id}: {state}, {airflow.api.task_states(dag_id, run_id)}\n{logs}")


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def daily_folder(images: Path, run: dict[str, Any]) -> Path:
    """Where the daily example puts a run's images: ``<date>``, or ``<date>-<kind>-<time>``."""
    after = moment(run["run_after"])
    day = f"{moment(run['logical_date']) if run['logical_date'] else after:%Y-%m-%d}"
    kind = run["run_type"]
    return images / (day if kind == "scheduled" else f"{day}-{kind}-{after:%H%M%S}")


def check_images(folder: Path, prompts: list[str], size: tuple[int, int] = (1024, 1024)) -> dict[str, Any]:
    """Every prompt stored once, each image whole and as the manifest says."""
    doc = read_manifest(str(folder))
    assert doc is not None, f"no manifest in {folder}: {sorted(p.name for p in folder.parent.iterdir())}"
    assert verify_manifest(str(folder)) == []
    assert sorted(e["prompt"] for e in doc["items"]) == sorted(prompts)
    assert {e["status"] for e in doc["items"]} == {STORED}
    for entry in doc["items"]:
        with Image.open(folder / entry["file"]) as image:
            assert image.size == size
    return doc


def check_daily(airflow: Setup, run: dict[str, Any]) -> None:
    api, images = airflow.api, airflow.images
    finished(airflow, DAILY, run["dag_run_id"])
    folder = daily_folder(images, api.run(DAILY, run["dag_run_id"]))
    doc = check_images(folder, prompts_in(DEFAULT_PROMPTS))
    assert doc["credits_spent"] == 10 * len(doc["items"])
    assert api.xcom(DAILY, run["dag_run_id"], "generate")["folder"] == str(folder)


# --- the daily batch, every way it starts ------------------------------------------------------
def test_daily_batch_scheduled(airflow: Setup) -> None:
    cluster, api = airflow.cluster, airflow.api
    cluster.wait_for_dag(DAILY)
    (run, *_) = wait_until(lambda: api.runs(DAILY, "scheduled"), "the latest day's scheduled run")
    check_daily(airflow, run)


def test_daily_batch_from_the_trigger_button(airflow: Setup) -> None:
    cluster, api = airflow.cluster, airflow.api
    cluster.wait_for_dag(DAILY)
    check_daily(airflow, api.trigger(DAILY))


def test_daily_batch_from_the_cli_without_a_logical_date(airflow: Setup) -> None:
    cluster, api = airflow.cluster, airflow.api
    cluster.wait_for_dag(DAILY)
    before = {run["dag_run_id"] for run in api.runs(DAILY, "manual")}
    cluster.airflow("dags", "trigger", DAILY)
    (run,) = [run for run in api.runs(DAILY, "manual") if run["dag_run_id"] not in before]
    assert run["logical_date"] is None
    check_daily(airflow, run)


def test_daily_batch_in_a_backfill(airflow: Setup) -> None:
    cluster, api = airflow.cluster, airflow.api
    cluster.wait_for_dag(DAILY)
    day = "2025-03-04T00:00:00Z"
    body = {"dag_id": DAILY, "from_date": day, "to_date": day, "max_active_runs": 1}

    def created() -> bool:
        answer = api.http.post("/api/v2/backfills", json=body)
        # On SQLite the API refuses a backfill while the scheduler writes (503 "Database is locked");
        # 409: an earlier attempt made it after all.
        assert answer.status_code in (200, 409, 503), answer.text
        return answer.status_code != 503

    wait_until(created, "the backfill to be accepted", timeout=120)
    (run,) = wait_until(lambda: api.runs(DAILY, "backfill"), "the backfill's run")
    assert run["logical_date"].startswith("2025-03-04")
    check_daily(airflow, run)


# --- the other examples, from the Trigger button -------------------------------------------------
def test_asset_consumer_publishes_each_announced_day_and_a_manual_run_skips(airflow: Setup) -> None:
    cluster, api, images = airflow.cluster, airflow.api, airflow.images
    cluster.wait_for_dag(CONSUMER)
    (daily, *_) = wait_until(lambda: api.runs(DAILY, "scheduled"), "the daily batch's scheduled run")
    finished(airflow, DAILY, daily["dag_run_id"])
    published = images / "published" / daily_folder(images, daily).name
    wait_until(lambda: (published / "publication.json").exists(), "the scheduled day's publication")
    check_images(published, prompts_in(DEFAULT_PROMPTS))
    for run in api.runs(CONSUMER, "asset_triggered"):
        finished(airflow, CONSUMER, run["dag_run_id"])

    run = api.trigger(CONSUMER)  # no asset event triggered it: nothing to publish, and no failure
    finished(airflow, CONSUMER, run["dag_run_id"])
    assert api.task_states(CONSUMER, run["dag_run_id"]) == {"publish": "skipped"}


def test_mapped_batch_from_the_trigger_button(airflow: Setup) -> None:
    cluster, api, images = airflow.cluster, airflow.api, airflow.images
    cluster.wait_for_dag(MAPPED)
    run = api.trigger(MAPPED)
    finished(airflow, MAPPED, run["dag_run_id"])
    sheet = api.xcom(MAPPED, run["dag_run_id"], "contact_sheet")
    folder = Path(sheet["manifest"]).parent
    assert folder.parent == images / "mapped"
    check_images(folder, api.form_defaults(MAPPED)["prompts"])


def test_submit_then_sense_from_the_trigger_button(airflow: Setup) -> None:
    cluster, api, emu = airflow.cluster, airflow.api, airflow.emu
    cluster.wait_for_dag(SENSE)
    run = api.trigger(SENSE)
    finished(airflow, SENSE, run["dag_run_id"])
    submitted = api.xcom(SENSE, run["dag_run_id"], "submit")
    sensed = api.xcom(SENSE, run["dag_run_id"], "sense")
    assert sensed["id"] == submitted["job_id"] and sensed["status"] == "completed" and sensed["url"]
    assert emu.job(submitted["job_id"])["status"] == "completed"
    assert api.form_defaults(SENSE)["prompt"] in emu.stats()["submissions_by_prompt"]


def test_webhook_example_from_the_trigger_button_and_each_job_delivered(airflow: Setup) -> None:
    cluster, api, emu = airflow.cluster, airflow.api, airflow.emu
    cluster.wait_for_dag(WEBHOOK)
    run = api.trigger(WEBHOOK)
    finished(airflow, WEBHOOK, run["dag_run_id"])
    job_ids = api.xcom(WEBHOOK, run["dag_run_id"], "report")
    assert len(job_ids) == len(api.form_defaults(WEBHOOK)["prompts"])

    def delivered() -> dict[str, Any]:
        bodies = {}
        for signature, body in list(airflow.inbox.received):
            assert verify_signature(body, signature, emu.webhook_secret)
            bodies[json.loads(body)["id"]] = json.loads(body)
        return bodies if set(job_ids) <= set(bodies) else {}

    assert set(job_ids) <= set(wait_until(delivered, "a webhook per job", timeout=120))


def ended(airflow: Setup, dag_id: str, run_id: str) -> str:
    """Wait for a run to end; its final state."""

    def state() -> str | None:
        found = str(airflow.api.run(dag_id, run_id)["state"])
        return found if found in ("success", "failed") else None

    return str(wait_until(state, f"{dag_id} {run_id} to finish"))


def pause_reported(cluster: AirflowCluster, run_id: str, try_number: int) -> bool:
    """Whether the scheduler has had the executor's report of the exit of the waiting try's process."""
    lines = (cluster.home / "scheduler.log").read_text(errors="replace").splitlines()
    key = f"(dag_id='{REVIEW}', task_id='generate', run_id='{run_id}', try_number={try_number},"
    return any("Received executor event" in line and key in line for line in lines)


@pytest.mark.skipif(bool(_compat.HUMAN_REVIEW_UNAVAILABLE), reason=str(_compat.HUMAN_REVIEW_UNAVAILABLE))
def test_review_scheduled_rejected_and_triggered_approved_over_rest(airflow: Setup) -> None:
    """Both runs' batches wait for a person; the answers come through the REST API's HITL endpoints.

    The manual run is queued behind the scheduled one (one active run at a time). Each request is
    answered once the executor has reported the paused process's exit, as a person's answer would come:
    an answer before it can lose the resumed try to Airflow's own race ("state changed externally",
    which a loaded machine makes seconds long). Should a try be lost all the same, its retry asks
    again and gets the same answer: each round answers whichever run is asking, until both have ended.
    """
    cluster, api, images = airflow.cluster, airflow.api, airflow.images
    cluster.wait_for_dag(REVIEW)
    (scheduled, *_) = wait_until(lambda: api.runs(REVIEW, "scheduled"), "the latest day's scheduled run")
    manual = api.trigger(REVIEW)
    approves = {scheduled["dag_run_id"]: False, manual["dag_run_id"]: True}
    # waiting without a worker slot: parked (3.3+) or deferred to the standard provider's HITLTrigger
    waiting = "awaiting_input" if _compat.AWAITS_INPUT else "deferred"
    answered: dict[str, dict[str, Any]] = {}

    def answer_who_asks() -> bool:
        for run_id, approve in approves.items():
            path = f"/api/v2/dags/{REVIEW}/dagRuns/{run_id}"
            asking = api.get(f"{path}/hitlDetails", response_received=False)["hitl_details"]
            if not asking and api.run(REVIEW, run_id)["state"] in ("success", "failed"):
                assert run_id in answered, f"{run_id} ended without asking: {api.task_states(REVIEW, run_id)}"
            if not asking or api.task_states(REVIEW, run_id)["generate"] != waiting:
                continue
            (request,) = asking
            ti = request["task_instance"]
            assert ti["task_id"] == "generate" and request["options"] == ["Approve", "Reject"]
            if not pause_reported(cluster, run_id, int(ti["try_number"])):
                continue
            kept = api.http.patch(
                f"{path}/taskInstances/generate/-1/hitlDetails",
                json={"chosen_options": ["Approve" if approve else "Reject"]},
            )
            assert kept.status_code == 200, kept.text
            answered[run_id] = kept.json()
        return all(api.run(REVIEW, run_id)["state"] in ("success", "failed") for run_id in approves)

    wait_until(answer_who_asks, "both reviewed runs to end")
    prompts = api.form_defaults(REVIEW)["prompts"]
    for run_id, approve in approves.items():
        kept = answered[run_id]
        assert api.run(REVIEW, run_id)["state"] == ("success" if approve else "failed")
        assert api.task_states(REVIEW, run_id) == {
            "folder": "success",
            "generate": "success" if approve else "failed",
        }
        folder = daily_folder(images / "review", api.run(REVIEW, run_id))
        doc = check_images(folder, prompts)  # a rejected batch's images stay, as its manifest says
        review = doc["review"]
        assert review["decision"] == ("approved" if approve else "rejected") and review["timed_out"] is False
        assert (review["by"], review["by_id"]) == (kept["responded_by"]["name"], kept["responded_by"]["id"])
        assert review["at"][:19] == kept["responded_at"][:19]
        if approve:
            assert api.xcom(REVIEW, run_id, "generate")["review"] == review


def test_taskflow_example_from_the_trigger_button(airflow: Setup) -> None:
    """The poster waits in the triggerer; each prompt is sent once; the manifest keeps the function's order."""
    cluster, api, emu, images = airflow.cluster, airflow.api, airflow.emu, airflow.images
    cluster.wait_for_dag(TASKFLOW)
    run = api.trigger(TASKFLOW)
    run_id = run["dag_run_id"]
    finished(airflow, TASKFLOW, run_id)
    assert api.task_states(TASKFLOW, run_id) == {
        "folder": "success",
        "poster": "success",
        "variations": "success",
    }
    assert "deferred" in cluster.states_seen["poster[-1]"]  # the example's only run: its poster waited
    subject = api.form_defaults(TASKFLOW)["subject"]
    poster = api.xcom(TASKFLOW, run_id, "poster")
    assert poster["prompt"] == f"A poster of {subject}, flat colours, bold shapes"
    folder = images / "taskflow" / safe_component(run_id)
    assert Path(poster["output_path"]).parent == folder / "poster" and Path(poster["output_path"]).is_file()
    variations = api.xcom(TASKFLOW, run_id, "variations")
    assert variations["stored"] == len(TASKFLOW_STYLES)
    assert variations["folder"].rstrip("/") == str(folder / "variations")
    prompts = [f"{poster['prompt']}, as a {s}" for s in TASKFLOW_STYLES]
    doc = check_images(Path(variations["folder"]), prompts, (512, 512))
    assert [item["prompt"] for item in doc["items"]] == prompts  # in the order the function returned
    submitted = emu.stats()["submissions_by_prompt"]
    assert {p: submitted.get(p) for p in [poster["prompt"], *prompts]} == {
        p: 1 for p in [poster["prompt"], *prompts]
    }
