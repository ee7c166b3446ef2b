"""The webhook receiver on its own and behind the webhook example DAG, against the emulator."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_doitong.client.webhooks import SIGNATURE_HEADER, sign_payload
from tests.conftest import run_dag, task_states, xcom_value
from tests.examples._helpers import EXAMPLES, load_example

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


SECRET = "receiver-test-secret"


@pytest.fixture(scope="module")
def receiver_module() -> Any:
    return load_example("webhook_receiver")


def post(url: str, body: bytes, signature: str | None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def job_body(job_id: str) -> bytes:
    payload = {
        "id": job_id,
        "status": "completed",
        "url": f"https://cdn.doitong.com/outputs/{job_id}.jpg",
        "service": "flux-krea",
        "createdAt": "2025-01-01T00:00:00Z",
        "completedAt": "2025-01-01T00:00:20Z",
        "metadata": {"duration": 20.0, "width": 1024, "height": 1024},
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_receiver_verifies_dedupes_and_records(receiver_module: Any, tmp_path: Path) -> None:
    record_file = tmp_path / "deliveries.jsonl"
    with receiver_module.WebhookReceiver(secret=SECRET, record_file=record_file) as receiver:
        body = job_body("job-1")
        signature = sign_payload(body, SECRET)
        assert post(receiver.url, body, signature) == (200, {"status": "accepted", "id": "job-1"})
        assert post(receiver.url, body, signature) == (200, {"status": "duplicate", "id": "job-1"})
        assert post(receiver.url, body, sign_payload(body, "wrong-secret"))[0] == 401
        assert post(receiver.url, body, None)[0] == 401
        assert post(receiver.url, body + b" ", sign_payload(body, SECRET))[0] == 401
        assert post(receiver.url, body, "sha256=" + "0" * 64)[0] == 401
        not_a_job = b'{"status": "completed"}'
        assert post(receiver.url, not_a_job, sign_payload(not_a_job, SECRET))[0] == 400
        elsewhere = receiver.url.replace("/doitong/webhook", "/elsewhere")
        assert post(elsewhere, body, signature)[0] == 404
        assert [d["job_id"] for d in receiver.deliveries] == ["job-1"]
        assert receiver.counts == {"accepted": 1, "duplicate": 1, "rejected": 4, "invalid": 1}
    assert [r["job_id"] for r in records(record_file)] == ["job-1"]
    assert records(record_file)[0]["payload"] == json.loads(body)

    with receiver_module.WebhookReceiver(secret=SECRET, record_file=record_file) as restarted:
        body2 = job_body("job-2")
        assert post(restarted.url, body, sign_payload(body, SECRET))[1]["status"] == "duplicate"
        assert post(restarted.url, body2, sign_payload(body2, SECRET))[1]["status"] == "accepted"
    assert [r["job_id"] for r in records(record_file)] == ["job-1", "job-2"]


def test_concurrent_redeliveries_are_processed_once(receiver_module: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with receiver_module.WebhookReceiver(secret=SECRET) as receiver:
        body = job_body("job-raced")
        signature = sign_payload(body, SECRET)
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda _: post(receiver.url, body, signature), range(16)))
        assert {status for status, _ in answers} == {200}
        assert sorted(answer["status"] for _, answer in answers).count("accepted") == 1
        assert len(receiver.deliveries) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_receiver_runs_from_the_command_line(tmp_path: Path) -> None:
    port = _free_port()
    record_file = tmp_path / "cli.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "webhook_receiver.py"),
            "--port",
            str(port),
            "--record",
            str(record_file),
        ],
        env={**os.environ, "DOITONG_WEBHOOK_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "the receiver did not start"
                time.sleep(0.05)
        body = job_body("job-cli")
        url = f"http://127.0.0.1:{port}/doitong/webhook"
        assert post(url, body, sign_payload(body, SECRET))[0] == 200
        assert post(url, body, sign_payload(body, "forged"))[0] == 401
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert [r["job_id"] for r in records(record_file)] == ["job-cli"]


def test_receiver_cli_needs_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DOITONG_WEBHOOK_SECRET"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "webhook_receiver.py"), "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2 and "DOITONG_WEBHOOK_SECRET" in done.stderr


def test_webhook_dag_delivers_each_job_once(receiver_module: Any, doitong_conn: Any, tmp_path: Path) -> None:
    emu = doitong_conn
    record_file = tmp_path / "deliveries.jsonl"
    prompts = ["a webhook for the fox", "a webhook for the lighthouse", "a webhook for the fox"]
    with receiver_module.WebhookReceiver(secret=emu.webhook_secret, record_file=record_file) as receiver:
        dag = load_example("doitong_webhook").dag
        run = run_dag(
            dag, run_conf={"prompts": prompts, "webhook_url": receiver.url, "width": 256, "height": 256}
        )
        assert set(task_states(run).values()) == {"success"}
        job_ids = xcom_value(run, "report")
        assert len(job_ids) == 2
        submitted = emu.stats()["submissions_by_prompt"]
        assert submitted == {"a webhook for the fox": 1, "a webhook for the lighthouse": 1}

        assert receiver.wait_for(2, timeout=30)
        deadline = time.monotonic() + 10
        while emu.stats()["webhooks"]["delivered"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert emu.stats()["webhooks"] == {"attempts": 2, "delivered": 2, "failed": 0}
        assert sorted(d["job_id"] for d in receiver.deliveries) == sorted(job_ids)
        assert all(d["status"] == "completed" and d["url"] for d in receiver.deliveries)

        delivered = receiver.deliveries[0]["payload"]
        body = json.dumps(delivered).encode()
        assert post(receiver.url, body, sign_payload(body, emu.webhook_secret)) == (
            200,
            {"status": "duplicate", "id": delivered["id"]},
        )
        forged = json.dumps({**delivered, "id": "forged-job"}).encode()
        assert post(receiver.url, forged, sign_payload(forged, "not-the-secret"))[0] == 401
        assert post(receiver.url, forged, None)[0] == 401
        assert len(receiver.deliveries) == 2
    lines = records(record_file)
    assert sorted(line["job_id"] for line in lines) == sorted(job_ids)
