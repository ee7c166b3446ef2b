"""The two DAG files the batch benchmark runs: this provider, and what a user writes without it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from benchmarks.batch import BatchSettings
    from doitong_emulator import DoitongEmulator

OURS_DAG_ID = "doitong_bench_ours"
BASELINE_DAG_ID = "doitong_bench_baseline"
HTTP_CONN_ID = "doitong_http"

OURS = textwrap.dedent(
    """
    from __future__ import annotations

    from datetime import timedelta

    import pendulum

    from airflow.sdk import DAG, task
    from airflow_provider_doitong.operators.flux import FluxGenerateOperator

    with DAG(
        "%(dag_id)s", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False,
        max_active_tasks=512, max_active_runs=1,
    ):

        @task
        def prompts(dag_run=None):
            return dag_run.conf["prompts"]

        images = FluxGenerateOperator.partial(
            task_id="generate", width=%(size)d, height=%(size)d, deferrable=True,
            poll_interval=%(poll_interval)r, output_path="{{ dag_run.conf['output'] }}/", pool="doitong",
            retries=%(retries)d, retry_delay=timedelta(seconds=%(retry_delay)r),%(min_defer)s
        ).expand(prompt=prompts())
    """
)

BASELINE = textwrap.dedent(
    """
    from __future__ import annotations

    import json
    from datetime import timedelta
    from pathlib import Path

    import pendulum
    import requests

    from airflow.providers.http.operators.http import HttpOperator
    from airflow.providers.http.sensors.http import HttpSensor
    from airflow.sdk import DAG, PokeReturnValue, task, task_group
    from airflow.sdk.exceptions import AirflowFailException


    def job_done(response):
        job = response.json()["data"]["job"]
        if job["status"] == "failed":
            raise AirflowFailException(f"Doitong job {job['id']} failed: {job.get('error')}")
        return PokeReturnValue(is_done=job["status"] == "completed", xcom_value=job.get("url"))


    with DAG(
        "%(dag_id)s", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False,
        max_active_tasks=512, max_active_runs=1,
        default_args={
            "retries": 3, "retry_delay": timedelta(seconds=%(retry_delay)r), "retry_exponential_backoff": True,
            "weight_rule": "upstream",
        },
    ):

        @task
        def bodies(dag_run=None):
            return [
                json.dumps({"service": "flux-krea", "prompt": p, "width": %(size)d, "height": %(size)d})
                for p in dag_run.conf["prompts"]
            ]

        @task
        def download(url, dag_run=None):
            out = Path(dag_run.conf["output"])
            out.mkdir(parents=True, exist_ok=True)
            response = requests.get(url, timeout=30)
            response.raise_for_status()
            (out / url.rsplit("/", 1)[-1]).write_bytes(response.content)

        @task_group
        def image(body):
            submit = HttpOperator(
                task_id="submit", http_conn_id="%(conn_id)s", method="POST", endpoint="v1/text_to_image",
                data=body, headers={"Content-Type": "application/json"},
                response_filter=lambda r: r.json()["data"]["generateimage"]["id"], pool="doitong",
            )
            wait = HttpSensor(
                task_id="wait", http_conn_id="%(conn_id)s",
                endpoint="v1/jobs/{{ ti.xcom_pull(task_ids='image.submit', map_indexes=ti.map_index) }}",
                response_check=job_done, response_error_codes_allowlist=["404", "429"],
                poke_interval=%(poke_interval)r, deferrable=True, pool="doitong",
            )
            submit >> wait
            download(wait.output)

        image.expand(body=bodies())
    """
)


def ours_dag(
    *,
    poll_interval: float,
    retry_delay: float,
    size: int,
    dag_id: str = OURS_DAG_ID,
    retries: int = 2,
    min_defer: float = 0.0,
    then: str = "",
) -> str:
    """The provider's DAG: one mapped ``FluxGenerateOperator``, deferrable, in the ``doitong`` pool.

    :param min_defer: the tasks' ``min_defer_seconds`` (0, the default: each defers at once).
    :param then: more of the DAG's body, indented as it is (the mapped task is ``images``).
    """
    body = OURS % {
        "dag_id": dag_id,
        "poll_interval": poll_interval,
        "retry_delay": retry_delay,
        "size": size,
        "retries": retries,
        "min_defer": f" min_defer_seconds={min_defer!r}," if min_defer else "",
    }
    return body + then


def baseline_dag(*, poke_interval: float, retry_delay: float, size: int) -> str:
    """The HTTP-provider DAG: submit (REST), ``HttpSensor(deferrable=True)`` on the job, then download."""
    return BASELINE % {
        "dag_id": BASELINE_DAG_ID,
        "conn_id": HTTP_CONN_ID,
        "poke_interval": poke_interval,
        "retry_delay": retry_delay,
        "size": size,
    }


BATCH_DAG_ID = "doitong_bench_batch"
BATCH_DEFERRABLE_DAG_ID = "doitong_bench_batch_deferrable"
#: The connections of the batch-operator sides, each to its own emulator.
BATCH_CONN_IDS = {BATCH_DAG_ID: "doitong_batch", BATCH_DEFERRABLE_DAG_ID: "doitong_batch_deferrable"}

BATCH = textwrap.dedent(
    """
    from __future__ import annotations

    from datetime import timedelta

    import pendulum

    from airflow.sdk import DAG
    from airflow_provider_doitong.operators.batch import FluxBatchOperator

    with DAG("%(dag_id)s", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False, max_active_runs=1):
        FluxBatchOperator(
            task_id="generate", prompts_file="{{ dag_run.conf['prompts_file'] }}",
            output_path="{{ dag_run.conf['output'] }}", width=%(size)d, height=%(size)d,
            deferrable=%(deferrable)r, poll_interval=%(poll_interval)r, min_defer_seconds=%(min_defer)r,
            doitong_conn_id="%(conn_id)s",
            retries=%(retries)d, retry_delay=timedelta(seconds=%(retry_delay)r),%(share)s
        )
    """
)


def batch_dag(
    *,
    dag_id: str,
    deferrable: bool,
    poll_interval: float,
    retry_delay: float,
    size: int,
    min_defer: float = 10.0,
    conn_id: str | None = None,
    retries: int = 2,
    share: int | None = None,
    concurrency: int | None = None,
) -> str:
    """One ``FluxBatchOperator`` task for the whole batch (its prompts from a file), sync or deferrable.

    :param conn_id: the Doitong connection; default the side's own (:data:`BATCH_CONN_IDS`).
    :param share: a hard share of the account: this many jobs at once (``concurrency``) and as many
        slots of the ``doitong`` pool.
    :param concurrency: the account's jobs at once, where its plan's custom limits differ from the
        named plan's (an enterprise account), without a pool.
    """
    if share is None and concurrency is not None:
        extra = f"\n            concurrency={concurrency},"
    else:
        extra = f'\n            concurrency={share}, pool="doitong", pool_slots={share},' if share else ""
    return BATCH % {
        "dag_id": dag_id,
        "deferrable": deferrable,
        "poll_interval": poll_interval,
        "min_defer": min_defer,
        "retry_delay": retry_delay,
        "size": size,
        "conn_id": conn_id or BATCH_CONN_IDS[dag_id],
        "retries": retries,
        "share": extra,
    }


def write_all(settings: BatchSettings, dags_dir: Path, retry_delay: float) -> float:
    """Write every side's DAG file; return the baseline's poke interval (real seconds)."""
    (dags_dir / "bench_ours.py").write_text(
        ours_dag(poll_interval=settings.poll_interval, retry_delay=retry_delay, size=settings.size)
    )
    poke = settings.baseline_poke_emulated * settings.time_scale
    (dags_dir / "bench_baseline.py").write_text(
        baseline_dag(poke_interval=poke, retry_delay=retry_delay, size=settings.size)
    )
    write_batch_dags(settings, dags_dir, retry_delay=retry_delay)
    return poke


def write_batch_dags(
    settings: BatchSettings,
    dags_dir: Path,
    *,
    retry_delay: float,
    dag_ids: tuple[str, str] = (BATCH_DAG_ID, BATCH_DEFERRABLE_DAG_ID),
    conn_id: str | None = None,
    retries: int = 2,
    share: int | None = None,
) -> None:
    """Write the ``FluxBatchOperator`` DAG files, sync then deferrable, each ``<dag_id>.py``.

    :param dag_ids: the sync DAG's id and the deferrable one's.
    :param conn_id: both DAGs' Doitong connection (default: each side's own).
    :param share: each batch's hard share of the account (see :func:`batch_dag`).
    """
    for dag_id, deferrable in zip(dag_ids, (False, True), strict=True):
        (dags_dir / f"{dag_id}.py").write_text(
            batch_dag(
                dag_id=dag_id,
                deferrable=deferrable,
                poll_interval=settings.batch_poll_interval,
                min_defer=settings.batch_min_defer,
                retry_delay=retry_delay,
                size=settings.size,
                conn_id=conn_id,
                retries=retries,
                share=share,
            )
        )


def connections(emus: dict[str, DoitongEmulator]) -> dict[str, str]:
    """Each side's connection, to its own emulator, as ``AIRFLOW_CONN_*`` variables."""

    def doitong(emu: DoitongEmulator) -> str:
        return json.dumps({"conn_type": "doitong", "host": emu.base_url, "password": emu.api_key})

    base = emus["baseline"]
    return {
        "AIRFLOW_CONN_DOITONG_DEFAULT": doitong(emus["ours"]),
        f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": base.port,
                "schema": "http",
                "extra": {"X-API-Key": base.api_key},
            }
        ),
        **{
            f"AIRFLOW_CONN_{BATCH_CONN_IDS[dag_id].upper()}": doitong(emus[side])
            for side, dag_id in (("batch", BATCH_DAG_ID), ("batch_deferrable", BATCH_DEFERRABLE_DAG_ID))
        },
    }
