"""``example_dags/run_demo.py`` (what ``python3 dev.py demo`` runs), as a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import REPO
from tests.examples._helpers import DEFAULT_PROMPTS, EXAMPLES, prompts_in

#: Starts servers or subprocesses: not in the unit lane (tests/lanes.py).
pytestmark = pytest.mark.integration


VENV_PYTHON = REPO / ".venv" / "bin" / "python"


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({"DOITONG_DEMO_OUTPUT": str(tmp_path / "output"), "DOITONG_DEMO_HOME": str(tmp_path / "demo")})
    python = str(VENV_PYTHON if VENV_PYTHON.exists() else sys.executable)
    return subprocess.run(
        [python, str(EXAMPLES / "run_demo.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def field(out: str, label: str) -> str:
    match = re.search(rf"^  {label}\s{{2,}}(.+)$", out, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{out}"
    return match.group(1).strip()


def test_demo_runs_the_batch_and_prints_where_everything_is(tmp_path: Path) -> None:
    done = run_demo(tmp_path)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    prompts = prompts_in(DEFAULT_PROMPTS)

    assert int(field(out, "Images")) == len(prompts)
    folder = Path(field(out, "Folder"))
    manifest = Path(field(out, "Manifest"))
    sheet_url = field(out, "Contact sheet")
    assert sheet_url.startswith("file:///")
    sheet = Path(unquote(urlsplit(sheet_url).path))
    log_file = Path(field(out, "Airflow logs"))
    assert folder.parent == tmp_path / "output"
    assert manifest == folder / "manifest.json" and sheet == folder / "index.html"
    assert manifest.is_file() and sheet.is_file() and log_file.is_file()
    assert re.search(r"^  Credits spent   80 \(estimated 80; 99,920 of 100,000 left", out, re.MULTILINE)
    data = json.loads(manifest.read_text())
    assert [entry["prompt"] for entry in data["items"]] == prompts
    assert all((folder / entry["file"]).is_file() for entry in data["items"])
    assert [entry["file"][:5] for entry in data["items"]] == [f"{n:04d}-" for n in range(1, 9)]
    assert "All 8 images, the manifest and the contact sheet exist and match." in out
    assert len(out.splitlines()) < 25
    assert "DAG TEST" in log_file.read_text()
    assert (tmp_path / "demo" / "airflow" / "airflow.db").exists()


def test_demo_will_not_delete_an_airflow_home_it_did_not_make(tmp_path: Path) -> None:
    foreign = tmp_path / "demo" / "airflow"
    foreign.mkdir(parents=True)
    (foreign / "airflow.cfg").write_text("[core]\n")
    done = run_demo(tmp_path)
    assert done.returncode == 1
    assert "was not made by the demo; not deleting it" in done.stdout
    assert (foreign / "airflow.cfg").read_text() == "[core]\n"
