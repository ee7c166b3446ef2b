"""The DAG files of the distributed run: images to S3 through an Airflow ``aws`` connection, plus a manifest."""

from __future__ import annotations

import textwrap

MAPPED_DAG_ID = "doitong_distributed_mapped"
#: The same DAG polling as often as the poller allows (0.25 s), to load the plan's request budget.
EAGER_DAG_ID = "doitong_distributed_eager"
EAGER_POLL_INTERVAL = 0.25
BUCKET = "doitong-images"
#: The Airflow connection of the S3 store; ``s3://<conn_id>@<bucket>/`` makes ObjectStoragePath use it.
AWS_CONN_ID = "aws_default"
MANIFEST = "manifest.json"

MAPPED = textwrap.dedent(
    """
    from __future__ import annotations

    import json
    from datetime import timedelta

    import pendulum

    from airflow.sdk import DAG, ObjectStoragePath, task
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
            poll_interval=%(poll_interval)r, output_path="{{ dag_run.conf['output'] }}", pool="doitong",
            retries=3, retry_delay=timedelta(seconds=%(retry_delay)r),
        ).expand(prompt=prompts())

        @task
        def manifest(results, dag_run=None):
            entries = [
                {key: result[key] for key in ("job_id", "prompt", "output_path", "credit_cost", "status")}
                for result in results
            ]
            path = ObjectStoragePath(dag_run.conf["output"]) / "%(manifest)s"
            path.write_text(json.dumps({"images": entries}, indent=1))
            return str(path)

        manifest(images.output)
    """
)


def mapped_dag(*, poll_interval: float, retry_delay: float, size: int, dag_id: str = MAPPED_DAG_ID) -> str:
    """One mapped deferrable ``FluxGenerateOperator`` writing to ``conf["output"]``, then a manifest task."""
    return MAPPED % {
        "dag_id": dag_id,
        "poll_interval": poll_interval,
        "retry_delay": retry_delay,
        "size": size,
        "manifest": MANIFEST,
    }


def output_url(prefix: str) -> str:
    """Where a run's images go: ``s3://aws_default@doitong-images/<prefix>/``."""
    return f"s3://{AWS_CONN_ID}@{BUCKET}/{prefix}/"
