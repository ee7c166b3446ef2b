"""The ``doitong-emulator`` command, run as a subprocess."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from doitong_emulator.cli import build_parser


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cli:
    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "doitong_emulator", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    def base_url(self, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                line = self.process.stdout.readline()
                match = re.search(r"listening on (http://\S+)", line)
                if match:
                    return match.group(1)
                assert line, (
                    f"the emulator exited: {self.process.stderr.read() if self.process.stderr else ''}"
                )
        raise AssertionError("no base URL line")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=15)
        finally:
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def run_cli() -> Iterator:
    started: list[Cli] = []

    def run(*args: str) -> Cli:
        cli = Cli(*args)
        started.append(cli)
        return cli

    yield run
    for cli in started:
        if cli.process.poll() is None:
            cli.process.kill()
            cli.process.wait(5)


@pytest.mark.integration
def test_cli_serves_and_stops_cleanly(run_cli):
    port = _free_port()
    cli = run_cli(
        "--port",
        str(port),
        "--api-key",
        "cli-key",
        "--plan",
        "starter",
        "--credits",
        "500",
        "--time-scale",
        "0.02",
        "--job-seconds",
        "5",
    )
    base_url = cli.base_url()
    assert base_url == f"http://127.0.0.1:{port}"
    response = requests.get(f"{base_url}/v1/account", headers={"X-API-Key": "cli-key"}, timeout=5)
    assert response.json() == {"data": {"account": {"plan": "starter", "credits": 500}}}
    assert response.headers["X-RateLimit-Limit"] == "30"
    assert cli.stop() == 0


@pytest.mark.integration
def test_cli_state_file_keeps_jobs_across_restarts(run_cli, tmp_path: Path):
    state_file = tmp_path / "state.json"
    port = _free_port()
    args = (
        "--port",
        str(port),
        "--time-scale",
        "0.02",
        "--job-seconds",
        "5",
        "--state-file",
        str(state_file),
    )
    first = run_cli(*args)
    base_url = first.base_url()
    headers = {"X-API-Key": "emulator-key"}
    submitted = requests.post(
        f"{base_url}/v1/text_to_image",
        json={"service": "flux-dev", "prompt": "kept"},
        headers=headers,
        timeout=5,
    ).json()["data"]["generateimage"]
    assert first.stop(signal.SIGINT) == 0
    assert state_file.exists()
    assert "emulator-key" not in state_file.read_text()

    second = run_cli(*args)
    assert second.base_url() == base_url
    job = requests.get(f"{base_url}/v1/jobs/{submitted['id']}", headers=headers, timeout=5).json()["data"][
        "job"
    ]
    assert job["status"] == "completed"
    assert job["createdAt"] == submitted["createdAt"]
    account = requests.get(f"{base_url}/v1/account", headers=headers, timeout=5).json()["data"]["account"]
    assert account["credits"] == 100_000 - 50
    assert requests.get(f"{base_url}/_emulator/stats", timeout=5).json()["submissions_by_prompt"] == {
        "kept": 1
    }
    assert second.stop() == 0


def test_cli_options_parse():
    args = build_parser().parse_args(
        [
            "--error-500-rate",
            "0.1",
            "--error-429-rate",
            "0.2",
            "--drop-rate",
            "0.05",
            "--latency",
            "0.5",
            "--fail-job-rate",
            "0.1",
            "--stuck-job-rate",
            "0.01",
            "--seed",
            "4",
            "--requests-per-minute",
            "600",
            "--concurrent-jobs",
            "20",
            "--daily-limit",
            "-1",
            "--queue-seconds",
            "2",
            "--job-seconds-spread",
            "3",
            "--webhook-secret",
            "s",
        ]
    )
    assert (args.error_500_rate, args.drop_rate, args.latency, args.seed) == (0.1, 0.05, 0.5, 4)
    assert (args.requests_per_minute, args.concurrent_jobs, args.daily_limit) == (600, 20, -1)


@pytest.mark.integration
def test_cli_rejects_bad_fault_rates(run_cli):
    cli = run_cli("--port", str(_free_port()), "--error-500-rate", "3")
    assert cli.process.wait(timeout=20) == 2
    assert "error_500_rate" in (cli.process.stderr.read() if cli.process.stderr else "")


def test_help_shows_every_default_and_says_the_images_are_placeholders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside a default
    parser = build_parser()
    text = " ".join(parser.format_help().split())
    assert "placeholders" in text and "random shapes" in text
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
            assert f"{action.help} (default: {action.default})" in text, action.dest
