"""FluxGenerateOperator in ``dag.test()`` against an emulator whose answers are hostile.

Each test checks what lands on disk (nothing outside the folder, nothing that is not an image),
who was contacted (a second server counts hits and records headers) and how the task ended.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from PIL import Image

from airflow_provider_doitong.operators.flux import FluxGenerateOperator
from doitong_emulator import FaultConfig
from tests.conftest import conn_json, run_dag, task_states, xcom_value
from tests.recorder import Answer, Recorder

_ids = itertools.count()


def make_dag(**op_kwargs: Any) -> DAG:
    with DAG(
        f"doitong_untrusted_{next(_ids)}",
        schedule=None,
        start_date=pendulum.datetime(2025, 1, 1),
        catchup=False,
    ) as dag:
        FluxGenerateOperator(task_id="generate", poll_interval=0.1, width=256, height=256, **op_kwargs)
    return dag


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def use_connection(monkeypatch: pytest.MonkeyPatch, emu: Any, **extra: Any) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DOITONG_DEFAULT", conn_json(emu, **extra))


def downloads(emu: Any) -> list[int]:
    return [e["status"] for e in emu.request_log() if e["kind"] == "download"]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as rec:
        yield rec


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_hostile_id_and_suffix_stay_data(doitong_conn: Any, tmp_path: Path, deferrable: bool) -> None:
    doitong_conn.set_faults(FaultConfig(hostile_job_ids=True, output_suffix=".py", output_format="png"))
    out = tmp_path / "deep" / "out"
    run = run_dag(make_dag(prompt="escape", deferrable=deferrable, output_path=f"{out}/"))
    assert task_states(run) == {"generate": "success"}
    result = xcom_value(run, "generate")
    assert result["job_id"].startswith("../../escape_") and result["url"].endswith(".py")
    stored = Path(result["output_path"])
    assert stored.parent == out and stored.name.startswith("_.._escape_") and stored.suffix == ".png"
    assert files_under(tmp_path) == {f"deep/out/{stored.name}"}
    with Image.open(stored) as image:
        assert image.format == "PNG" and image.size == (256, 256)


def test_an_output_on_an_unlisted_host_fails_without_a_request(
    doitong_conn: Any, tmp_path: Path, recorder: Recorder, capfd: Any
) -> None:
    doitong_conn.set_faults(FaultConfig(output_base_url=recorder.base_url))
    run = run_dag(make_dag(prompt="elsewhere", retries=2, output_path=f"{tmp_path}/"))
    assert task_states(run) == {"generate": "failed"}
    assert run.get_task_instances()[0].try_number == 1  # final: no retry would help
    out = capfd.readouterr().out
    assert "host 'localhost'" in out and "allowed_download_hosts" in out
    assert recorder.seen == [] and files_under(tmp_path) == set()
    assert doitong_conn.stats()["requests"]["submit"] == 1


def test_the_connection_extra_lets_a_host_in(emulator: Any, monkeypatch: Any, tmp_path: Path) -> None:
    use_connection(monkeypatch, emulator, allowed_download_hosts="localhost, cdn.example.com")
    emulator.set_faults(FaultConfig(output_base_url=f"http://localhost:{emulator.port}"))
    run = run_dag(make_dag(prompt="trusted", output_path=f"{tmp_path}/"))
    assert task_states(run) == {"generate": "success"}
    assert downloads(emulator) == [200]
    assert files_under(tmp_path) == {f"{xcom_value(run, 'generate')['job_id']}.jpg"}


def test_a_redirect_to_an_unlisted_host_fails_without_a_request(
    doitong_conn: Any, tmp_path: Path, recorder: Recorder, capfd: Any
) -> None:
    doitong_conn.set_faults(FaultConfig(download_redirects=1, redirect_base_url=recorder.base_url))
    run = run_dag(make_dag(prompt="bounced", retries=2, output_path=f"{tmp_path}/"))
    assert task_states(run) == {"generate": "failed"}
    assert "redirect is on host 'localhost'" in capfd.readouterr().out
    assert recorder.seen == [] and files_under(tmp_path) == set()


def test_no_key_follows_a_redirect(
    emulator: Any, monkeypatch: Any, tmp_path: Path, recorder: Recorder
) -> None:
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    recorder.answer_with(Answer(200, png.getvalue(), {"Content-Type": "image/png"}))
    use_connection(monkeypatch, emulator, allowed_download_hosts=["localhost"], transport="rest")
    emulator.set_faults(FaultConfig(download_redirects=1, redirect_base_url=recorder.base_url))
    run = run_dag(make_dag(prompt="redirected", output_path=f"{tmp_path}/"))
    assert task_states(run) == {"generate": "success"}
    assert len(recorder.seen) == 1 and recorder.credentials_seen() == set()
    assert files_under(tmp_path) == {f"{xcom_value(run, 'generate')['job_id']}.png"}


def test_an_html_page_is_never_stored(doitong_conn: Any, tmp_path: Path, capfd: Any) -> None:
    doitong_conn.set_faults(FaultConfig(download_body="html"))
    run = run_dag(make_dag(prompt="a page", output_path=f"{tmp_path}/"))
    assert task_states(run) == {"generate": "failed"}
    assert "an HTML or XML page, not an image" in capfd.readouterr().out
    assert downloads(doitong_conn) == [200] * 5  # the hook's retry policy: five attempts
    assert files_under(tmp_path) == set()


def test_a_bad_body_once_is_fetched_again(doitong_conn: Any, tmp_path: Path) -> None:
    doitong_conn.set_faults(FaultConfig(download_body="truncated", download_faults=1))
    run = run_dag(make_dag(prompt="second time lucky", output_path=f"{tmp_path}/"))
    assert task_states(run) == {"generate": "success"}
    assert downloads(doitong_conn) == [200, 200]
    with Image.open(xcom_value(run, "generate")["output_path"]) as image:
        image.load()


def test_an_endless_body_fails_at_the_cap(
    emulator: Any, monkeypatch: Any, tmp_path: Path, capfd: Any
) -> None:
    use_connection(monkeypatch, emulator, max_download_bytes=1024 * 1024)
    emulator.set_faults(FaultConfig(download_body="endless"))
    run = run_dag(make_dag(prompt="endless", retries=2, output_path=f"{tmp_path}/"))
    assert task_states(run) == {"generate": "failed"}
    assert run.get_task_instances()[0].try_number == 1
    assert "larger than 1048576 bytes" in capfd.readouterr().out
    assert files_under(tmp_path) == set()


def test_no_image_link_to_an_unlisted_host(doitong_conn: Any, recorder: Recorder) -> None:
    doitong_conn.set_faults(FaultConfig(output_base_url=recorder.base_url))
    run = run_dag(make_dag(prompt="not stored"))
    assert task_states(run) == {"generate": "success"}
    assert xcom_value(run, "generate")["url"].startswith(recorder.base_url)  # the answer, as data
    assert xcom_value(run, "generate", key="_link_DoitongImageLink") == ""
    assert recorder.seen == []
