"""``FluxBatchOperator`` killed while its requests are in flight: a real scheduler, triggerer and
LocalExecutor, the emulator over HTTP behind :class:`~tests.support.held_emulator.Holds`.

The batch keeps many requests in flight (a group of submissions sent at once, downloads beside the
loop, the trigger's reads). Each test holds some of them at a stage it can observe, kills the
process that sent them (the task's process group with SIGKILL, or the triggerer), lets the retry or
the restarted triggerer finish, and checks the run against the emulator's own counts: which prompts
were submitted how many times, every image stored once and listed in the manifest with its SHA-256,
no image stored before the kill written again.

What a kill may cost, and no more: a submission whose job the API made but whose answer the kill
cut off cannot be found again (the API has no idempotency key and no way to list jobs), so its item
is submitted once more, named in the retry's log as possibly charged (``on_ambiguous_submission``).
A submission whose answer reached the worker is never sent again, nor one that never reached the API
more than once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from airflow_provider_doitong.batch.manifest import verify_manifest
from tests.support.airflow_cluster import AirflowCluster
from tests.support.held_emulator import HoldingEmulator, ledger_records

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TIME_SCALE = 0.1
#: 4-s jobs for the worker's tests: done before the retry starts, or soon after.
SHORT_JOB_SECONDS = 40
#: 25-s jobs for the deferrable test: a deferral lasts well past the executor's report of the
#: deferring process's exit, so Airflow's own resume race stays rare (as in test_batch_end_to_end).
LONG_JOB_SECONDS = 250
#: The pro plan runs 10 jobs at once: the first group of submissions is 10 POSTs sent together.
FIRST_GROUP = 10

DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    import pendulum

    from airflow.sdk import DAG
    from airflow_provider_doitong.operators.batch import FluxBatchOperator

    for dag_id, deferrable in (("doitong_inflight_sync", False), ("doitong_inflight_deferrable", True)):
        with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False):
            FluxBatchOperator(
                task_id="batch", prompts="{{ dag_run.conf['prompts'] | tojson }}",
                output_path="{{ dag_run.conf['output'] }}", width=256, height=256, deferrable=deferrable,
                poll_interval=1.0, min_defer_seconds=2.0, retries=4, retry_delay=1,
            )
    """
)

AMBIGUOUS = re.compile(r"item (\d+) \(.*?\) was being submitted when an earlier try stopped")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def inflight(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[AirflowCluster, HoldingEmulator, Path]]:
    root = tmp_path_factory.mktemp("batch-inflight")
    dags = root / "dags"
    dags.mkdir()
    (dags / "doitong_inflight.py").write_text(DAG_FILE)
    with HoldingEmulator(
        plan="pro", time_scale=TIME_SCALE, job_seconds=SHORT_JOB_SECONDS, credits=100_000
    ) as emu:
        conn = {"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key}
        env = {
            "AIRFLOW_CONN_DOITONG_DEFAULT": json.dumps(conn),
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "5",
        }
        with AirflowCluster(home=root / "airflow", dags_folder=dags, env=env) as cluster:
            for dag_id in ("doitong_inflight_sync", "doitong_inflight_deferrable"):
                cluster.wait_for_dag(dag_id)
            yield cluster, emu, root


def start(emu: HoldingEmulator, job_seconds: float) -> None:
    emu.holds.reset()
    emu.reset()
    emu.set_job_seconds(job_seconds)


def kill_task(cluster: AirflowCluster, run_id: str) -> int:
    """SIGKILL the task's process group (its process and every thread in it) and wait for its end."""
    (pid,) = wait_until(lambda: cluster.task_pids(run_id, "batch"), timeout=10, what="the task's process")
    assert os.getpgid(pid) == pid, "the task's process should lead its own process group"
    os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not _alive(pid), timeout=10, what="the task's process to die")
    return pid


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def submissions(emu: HoldingEmulator, prompts: list[str]) -> dict[str, int]:
    """How many times the API accepted each of ``prompts`` (another test's leftovers not counted)."""
    return {p: n for p, n in emu.stats()["submissions_by_prompt"].items() if p in prompts}


def prompt_index(prompts: list[str], text: str) -> int:
    return prompts.index(text)


def check_output(
    emu: HoldingEmulator, output: Path, cluster: AirflowCluster, prompts: list[str]
) -> dict[str, Any]:
    """Every prompt's image stored once, listed in the manifest, its SHA-256 verified; no secret logged."""
    manifest = json.loads((output / "manifest.json").read_text())
    assert [e["prompt"] for e in manifest["items"]] == prompts
    assert manifest["image_count"] == len(prompts) and verify_manifest(str(output)) == []
    assert sorted(p.name for p in output.glob("*.jpg")) == sorted(e["file"] for e in manifest["items"])
    assert emu.api_key not in cluster.task_logs()
    return manifest


def files_of(output: Path, records: dict[int, dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """The stored items' files, with the inode and modification time that a rewrite would change."""
    found = {}
    for record in records.values():
        if record.get("state") == "stored" and record.get("file"):
            stat = (output / record["file"]).stat()
            found[record["file"]] = (stat.st_ino, stat.st_mtime_ns)
    return found


def test_worker_sigkill_with_a_group_of_submissions_in_flight(inflight: Any) -> None:
    """Killed while a group's POSTs are in flight: six answered, two made by the API but unanswered,
    two not yet at the API. Only the two the API made but never answered are submitted twice."""
    cluster, emu, root = inflight
    start(emu, SHORT_JOB_SECONDS)
    prompts = [f"in-flight submissions, image {n}" for n in range(12)]
    output = root / "submissions"
    holds = emu.holds
    # In arrival order: the first 6 answered, the next 2 made but unanswered, the next 2 held on the wire.
    holds.hold("submit", "request", skip=8, count=2)
    holds.hold("submit", "answer", skip=6, count=2)
    run_id = cluster.trigger("doitong_inflight_sync", {"prompts": prompts, "output": str(output)})

    def in_flight() -> bool:
        return (
            holds.delivered["submit"] >= 6
            and holds.count("submit", "answer") == 2
            and holds.count("submit", "request") == 2
        )

    wait_until(in_flight, timeout=120, what="a group with answers delivered and held")
    answered = {prompt_index(prompts, p) for p in holds.delivered_prompts}
    unanswered = {prompt_index(prompts, p) for p in holds.held_prompts["answer"]}
    on_the_wire = {prompt_index(prompts, p) for p in holds.held_prompts["request"]}
    assert len(answered) == 6 and emu.stats()["requests"]["submit"] == 8  # made by the API: 6 + 2

    def answers_recorded() -> bool:
        records = ledger_records(output)
        return all(records.get(i, {}).get("state") == "running" for i in answered)

    # The answers that reached the worker are recorded while their siblings are still in flight.
    try:
        recorded_before_kill = bool(wait_until(answers_recorded, timeout=15, what="the answers recorded"))
    except TimeoutError:
        recorded_before_kill = False
    states = {i: r.get("state") for i, r in ledger_records(output).items()}
    kill_task(cluster, run_id)
    holds.release_all()  # the held answers go to a dead worker; the POSTs on the wire are dropped

    state = cluster.wait_for_run(run_id, timeout=180)
    assert state == "success", cluster.task_states(run_id)
    expected = {p: 1 for p in prompts} | {prompts[i]: 2 for i in unanswered}
    assert submissions(emu, prompts) == expected, (sorted(answered), states)
    assert recorded_before_kill, (
        f"answers delivered to items {sorted(answered)}, ledger at the kill: {states}"
    )
    check_output(emu, output, cluster, prompts)
    (ti,) = cluster.task_instances(run_id)
    assert int(ti["try_number"]) == 2, ti
    retry_log = cluster.attempt_log("doitong_inflight_sync", run_id, "batch", -1, 2)
    assert "Picking up the batch from its ledger" in retry_log, retry_log[-3000:]
    ambiguous = {int(n) - 1 for n in AMBIGUOUS.findall(retry_log)}
    assert ambiguous == unanswered | on_the_wire, retry_log[-3000:]
    print(
        f"\n[submissions] answered {sorted(answered)}, made but unanswered {sorted(unanswered)}, "
        f"on the wire {sorted(on_the_wire)}; submissions {sum(expected.values())} for {len(prompts)} prompts"
    )


def test_worker_sigkill_with_downloads_in_flight(inflight: Any) -> None:
    """Killed while eight downloads are held after the API answered, two images stored: every prompt
    is submitted once, every image stored, the images stored before the kill not written again."""
    cluster, emu, root = inflight
    start(emu, SHORT_JOB_SECONDS)
    prompts = [f"in-flight downloads, image {n}" for n in range(FIRST_GROUP)]
    output = root / "downloads"
    holds = emu.holds
    holds.hold("download", "answer", skip=2)  # two images stored, the others' bytes held
    run_id = cluster.trigger("doitong_inflight_sync", {"prompts": prompts, "output": str(output)})

    def stored_two() -> bool:
        records = ledger_records(output)
        return sum(1 for r in records.values() if r.get("state") == "stored") >= 2

    held = FIRST_GROUP - 2
    wait_until(lambda: holds.count("download", "answer") == held, timeout=120, what="downloads in flight")
    wait_until(stored_two, timeout=30, what="two images stored")
    kept = files_of(output, ledger_records(output))
    kill_task(cluster, run_id)
    holds.release_all()

    state = cluster.wait_for_run(run_id, timeout=180)
    assert state == "success", cluster.task_states(run_id)
    assert submissions(emu, prompts) == {p: 1 for p in prompts}
    check_output(emu, output, cluster, prompts)
    assert {name: files_of(output, ledger_records(output)).get(name) for name in kept} == kept
    (ti,) = cluster.task_instances(run_id)
    assert int(ti["try_number"]) == 2, ti
    retry_log = cluster.attempt_log("doitong_inflight_sync", run_id, "batch", -1, 2)
    assert f"{len(kept)} already stored" in retry_log, retry_log[-3000:]
    downloads = emu.stats()["requests"]["download"]
    assert downloads == len(prompts) + held  # the held ones downloaded again, the stored ones not
    print(f"\n[downloads] {len(kept)} stored and {held} downloads held at the kill; {downloads} downloads")


def test_triggerer_sigkill_with_its_reads_in_flight(inflight: Any) -> None:
    """The triggerer killed while the deferred batch's status reads are held after the API answered."""
    cluster, emu, root = inflight
    start(emu, LONG_JOB_SECONDS)
    prompts = [f"in-flight reads, image {n}" for n in range(FIRST_GROUP)]
    output = root / "reads"
    holds = emu.holds
    run_id = cluster.trigger("doitong_inflight_deferrable", {"prompts": prompts, "output": str(output)})
    wait_until(lambda: cluster.task_states(run_id).get("batch") == "deferred", timeout=120, what="a deferral")
    holds.hold("status", "answer")
    wait_until(lambda: holds.count("status", "answer") >= 1, timeout=60, what="a read of the trigger's")
    held_reads = holds.count("status", "answer")
    cluster.kill("triggerer", signal.SIGKILL)
    holds.release_all()
    cluster.start_component("triggerer")

    state = cluster.wait_for_run(run_id, timeout=180)
    assert state == "success", cluster.task_states(run_id)
    assert submissions(emu, prompts) == {p: 1 for p in prompts}
    check_output(emu, output, cluster, prompts)
    (ti,) = cluster.task_instances(run_id)
    tries = int(ti["try_number"])
    # Airflow's resume race may fail a try as "changed externally" (see test_batch_end_to_end); the
    # triggerer's death costs none.
    assert tries - 1 <= len(state_mismatches(cluster, run_id)), ti
    logs = "\n".join(
        cluster.attempt_log("doitong_inflight_deferrable", run_id, "batch", -1, n)
        for n in range(1, tries + 1)
    )
    assert "Deferring with" in logs and "Resumed" in logs
    print(f"\n[reads] {held_reads} reads held at the triggerer's kill; tries {tries}")


def state_mismatches(cluster: AirflowCluster, run_id: str) -> list[str]:
    """The scheduler's lines that failed a try of ``run_id`` because its state changed under the executor."""
    lines = (cluster.home / "scheduler.log").read_text(errors="replace").splitlines()
    return [line for line in lines if run_id in line and "but the task instance's state attribute is" in line]
