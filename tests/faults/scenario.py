"""Running one fault scenario as its own DAG run, and the checks every scenario must pass."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doitong_emulator import DoitongEmulator, FaultConfig
from tests.support.airflow_cluster import AirflowCluster

TERMINAL = frozenset({"success", "failed", "skipped", "upstream_failed"})


@dataclass
class Outcome:
    """What one scenario run left behind."""

    dag_id: str
    run_id: str
    state: str
    prompts: list[str]
    output: Path
    tis: dict[int, dict[str, Any]]
    stats: dict[str, Any]
    jobs: list[dict[str, Any]]
    files: set[str]
    logs: str
    cluster: AirflowCluster
    seconds: float
    during: Any = None
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        tries = sorted(int(ti["try_number"] or 0) for ti in self.tis.values())
        s = self.stats
        return (
            f"run {self.state} in {self.seconds:.0f}s; tasks {dict(self.states())}; tries {tries}; "
            f"requests {s['requests']}; 5xx {s['http_5xx']}, 429 {s['http_429']}, dropped {s['dropped']}; "
            f"jobs {s['jobs']}"
        )

    def states(self) -> Counter[str]:
        return Counter(str(ti["state"]) for ti in self.tis.values())

    def ti_log(self, map_index: int, attempt: int | None = None) -> str:
        ti = self.tis[map_index]
        last = attempt or int(ti["try_number"] or 1)
        return self.cluster.attempt_log(self.dag_id, self.run_id, "generate", map_index, last)

    def jobs_of(self, prompt: str) -> list[dict[str, Any]]:
        return [j for j in self.jobs if j["prompt"] == prompt]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def run_scenario(
    cluster: AirflowCluster,
    emu: DoitongEmulator,
    *,
    name: str,
    dag_id: str,
    output: Path,
    faults: FaultConfig | None = None,
    during: Callable[[str, list[str]], Any] | None = None,
    prompts: int = 5,
    timeout: float = 240,
) -> Outcome:
    """Reset the emulator, set the faults, run the batch (calling ``during`` while it runs), collect."""
    emu.reset()
    emu.set_faults(faults or FaultConfig())
    texts = [f"{name}: image {n}" for n in range(prompts)]
    started = time.time()
    try:
        run_id = cluster.trigger(dag_id, {"prompts": texts, "output": str(output)})
        extra = during(run_id, texts) if during is not None else None
        state = cluster.wait_for_run(run_id, timeout=timeout)
    finally:
        emu.set_faults(FaultConfig())
    seconds = time.time() - started
    tis = {int(ti["map_index"]): ti for ti in cluster.task_instances(run_id) if ti["task_id"] == "generate"}
    with emu.state.lock:
        job_ids = list(emu.state.jobs)
    jobs = [emu.job(job_id) or {} for job_id in job_ids]
    jobs = [{"id": j["id"], "status": j["status"], "prompt": _prompt(emu, j["id"])} for j in jobs if j]
    outcome = Outcome(
        dag_id=dag_id,
        run_id=run_id,
        state=state,
        prompts=texts,
        output=output,
        tis=tis,
        stats=emu.stats(),
        jobs=jobs,
        files={p.stem for p in output.glob("*.jpg")},
        logs=cluster.task_logs(),
        cluster=cluster,
        seconds=seconds,
        during=extra,
    )
    print(f"\n[{name}] {outcome.summary()}")
    return outcome


def _prompt(emu: DoitongEmulator, job_id: str) -> str:
    with emu.state.lock:
        return emu.state.jobs[job_id].prompt


def assert_invariants(outcome: Outcome, emu: DoitongEmulator) -> None:
    """Every task finished; no image paid twice; every completed image stored; no secret in any log."""
    unfinished = {i: ti["state"] for i, ti in outcome.tis.items() if ti["state"] not in TERMINAL}
    assert not unfinished, f"tasks not finished: {unfinished}"
    assert len(outcome.tis) == len(outcome.prompts), outcome.tis
    for prompt in outcome.prompts:
        completed = [j for j in outcome.jobs_of(prompt) if j["status"] == "completed"]
        assert len(completed) <= 1, f"{prompt!r} was generated {len(completed)} times: {completed}"
    missing = [j for j in outcome.jobs if j["status"] == "completed" and j["id"] not in outcome.files]
    assert not missing, f"completed images without their file: {missing}"
    for i, ti in outcome.tis.items():
        if ti["state"] == "success":
            done = [j for j in outcome.jobs_of(outcome.prompts[i]) if j["status"] == "completed"]
            assert done and done[0]["id"] in outcome.files, f"task {i} succeeded without a stored image"
    assert emu.api_key not in outcome.logs, "the API key appears in the logs"
    assert emu.webhook_secret not in outcome.logs, "the webhook secret appears in the logs"


def assert_each_prompt_submitted_once(outcome: Outcome) -> None:
    counts = outcome.stats["submissions_by_prompt"]
    assert counts == {p: 1 for p in outcome.prompts}, counts


def assert_all_succeeded(outcome: Outcome) -> None:
    assert outcome.state == "success", (outcome.states(), _first_failure(outcome))
    assert outcome.states() == Counter({"success": len(outcome.prompts)}), outcome.states()


def _first_failure(outcome: Outcome) -> str:
    for i, ti in outcome.tis.items():
        if ti["state"] != "success":
            return outcome.ti_log(i)[-3000:]
    return ""


def seed_with(rate: float, hits: int, draws: int) -> int:
    """A seed whose first ``draws`` outcome draws fall under ``rate`` exactly ``hits`` times."""
    for seed in range(10_000):
        rng = random.Random(seed)
        if sum(rng.random() < rate for _ in range(draws)) == hits:
            return seed
    raise ValueError("no such seed")
