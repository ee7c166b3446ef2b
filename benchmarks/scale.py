"""A batch past ``[core] max_map_length`` (1,024): one ``FluxBatchOperator`` task, and the mapped form's failure.

The batch runs in sync mode at a small emulator time scale, on the pro plan's limits (10 jobs at
once, 60 requests a window), so the run stays short while the plan still sets its pace; 10,000
prompts are the pro plan's whole day. The same prompts given to the mapped ``FluxGenerateOperator``
fail at expansion, before any job is submitted.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import dags
from benchmarks.batch import (
    SIDES,
    BatchSettings,
    lower_bound,
    make_prompts,
    new_emulator,
    run_one,
    settings_doc,
)
from benchmarks.batch_operator import mapped_over_the_limit
from tests.support.airflow_cluster import AirflowCluster


def run_scale(
    settings: BatchSettings,
    *,
    say: Callable[[str], None] = print,
    keep: Path | None = None,
    mapped: bool = True,
) -> dict[str, Any]:
    """The batch operator over ``settings.prompts`` prompts, and (with ``mapped``) the mapped form's refusal."""
    prompts = make_prompts(settings.prompts)
    tmp = tempfile.TemporaryDirectory(prefix="doitong-scale-")
    work = Path(keep or tmp.name)
    dags_dir = work / "dags"
    dags_dir.mkdir(parents=True, exist_ok=True)
    _write_dags(settings, dags_dir)
    result: dict[str, Any] = {"settings": settings_doc(settings)}
    try:
        with contextlib.ExitStack() as stack:
            emu = stack.enter_context(new_emulator(settings))
            mapped_emu = stack.enter_context(new_emulator(settings))
            env = {
                f"AIRFLOW_CONN_{dags.BATCH_CONN_IDS[dags.BATCH_DAG_ID].upper()}": _conn(emu),
                "AIRFLOW_CONN_DOITONG_DEFAULT": _conn(mapped_emu),
            }
            with AirflowCluster(home=work / "airflow", dags_folder=dags_dir, env=env) as cluster:
                cluster.create_pool("doitong", settings.concurrency)
                cluster.wait_for_dag(dags.BATCH_DAG_ID)
                cluster.wait_for_dag(dags.OURS_DAG_ID)
                dag_id, final_task = SIDES["batch"]
                result["batch_operator"] = run_one(
                    cluster,
                    emu,
                    name="scale",
                    dag_id=dag_id,
                    settings=settings,
                    prompts=prompts,
                    work=work,
                    final_task=final_task,
                    timeout=1800 + 4 * lower_bound(settings)["lower_bound_s"],
                    say=say,
                )
                result["batch_operator"].pop("timeline", None)
                if mapped:
                    say(f"scale: the mapped form over {len(prompts)} prompts")
                    result["mapped"] = mapped_over_the_limit(
                        cluster, dags.OURS_DAG_ID, prompts, work / "images-mapped"
                    )
                    result["mapped"]["submissions"] = mapped_emu.stats()["requests"]["submit"]
    finally:
        if keep is None:
            tmp.cleanup()
    return result


def _write_dags(settings: BatchSettings, dags_dir: Path) -> None:
    delay = settings.window_real_seconds
    (dags_dir / "bench_batch.py").write_text(
        dags.batch_dag(
            dag_id=dags.BATCH_DAG_ID,
            deferrable=False,
            poll_interval=settings.batch_poll_interval,
            retry_delay=delay,
            size=settings.size,
        )
    )
    (dags_dir / "bench_ours.py").write_text(
        dags.ours_dag(poll_interval=settings.poll_interval, retry_delay=delay, size=settings.size)
    )


def _conn(emu: Any) -> str:
    return json.dumps({"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key})
