"""The DAG files of the distributed run: the batch benchmark's DAGs, writing to S3 through an ``aws`` connection.

The mapped form (:func:`benchmarks.dags.ours_dag`) gets a last task writing ``manifest.json`` beside
the images from the mapped results (the provider's :mod:`~airflow_provider_doitong.batch.manifest`,
so the file lists each image's SHA-256, as ``FluxBatchOperator``'s own manifest does). The
``FluxBatchOperator`` DAGs (:func:`benchmarks.dags.batch_dag`, sync and deferrable) read their
prompts from a file in the bucket and keep their ledger under their output folder, in the bucket.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.dags import ours_dag, write_batch_dags

if TYPE_CHECKING:
    from benchmarks.distributed import DistributedSettings

MAPPED_DAG_ID = "doitong_distributed_mapped"
#: The same DAG polling as often as the poller allows (0.25 s), to load the plan's request budget.
EAGER_DAG_ID = "doitong_distributed_eager"
EAGER_POLL_INTERVAL = 0.25
BATCH_DAG_ID = "doitong_distributed_batch"
BATCH_DEFERRABLE_DAG_ID = "doitong_distributed_batch_deferrable"
#: Two ``FluxBatchOperator`` DAGs (sync, deferrable) with the image cache at ``dag_run.conf['cache']``.
CACHE_DAG_IDS = ("doitong_distributed_cache_one", "doitong_distributed_cache_two")
DAG_IDS = (MAPPED_DAG_ID, EAGER_DAG_ID, BATCH_DAG_ID, BATCH_DEFERRABLE_DAG_ID, *CACHE_DAG_IDS)
BUCKET = "doitong-images"
#: The Airflow connection of the S3 store; ``s3://<conn_id>@<bucket>/`` makes ObjectStoragePath use it.
AWS_CONN_ID = "aws_default"
DOITONG_CONN_ID = "doitong_default"
MANIFEST = "manifest.json"
#: Where the batch DAGs' prompts files go in the bucket (outside every run's output folder).
PROMPTS_PREFIX = "prompts"
RETRIES = 3

MANIFEST_TASK = textwrap.indent(
    textwrap.dedent(
        """
        @task
        def manifest(results, dag_run=None):
            from airflow_provider_doitong.batch import manifest as listing

            folder = dag_run.conf["output"]
            entries = listing.entries_from_results(list(results), folder=folder)
            doc = listing.build_manifest(entries, title=dag_run.run_id)
            return listing.write_manifest(folder, doc)["manifest"]

        manifest(images.output)
        """
    ),
    "    ",
)


def write_dags(settings: DistributedSettings, dags_dir: Path) -> None:
    """Write the DAG files: mapped, mapped polling eagerly, ``FluxBatchOperator`` sync and deferrable, and
    those two again with the image cache.

    Retries wait one rate-limit window.
    """
    delay = settings.window_real_seconds
    for dag_id, poll in ((MAPPED_DAG_ID, settings.poll_interval), (EAGER_DAG_ID, EAGER_POLL_INTERVAL)):
        (dags_dir / f"{dag_id}.py").write_text(
            ours_dag(
                dag_id=dag_id,
                poll_interval=poll,
                retry_delay=delay,
                size=settings.size,
                retries=RETRIES,
                then=MANIFEST_TASK,
            )
        )
    for dag_ids in ((BATCH_DAG_ID, BATCH_DEFERRABLE_DAG_ID), CACHE_DAG_IDS):
        write_batch_dags(
            settings, dags_dir, retry_delay=delay, dag_ids=dag_ids, conn_id=DOITONG_CONN_ID, retries=RETRIES
        )
    for dag_id in CACHE_DAG_IDS:
        path = dags_dir / f"{dag_id}.py"
        path.write_text(with_cache(path.read_text()))


#: What :func:`with_cache` puts before the operator's connection argument.
CACHE_ARGUMENT = "cache_path=\"{{ dag_run.conf['cache'] }}\", "


def with_cache(source: str) -> str:
    """A ``FluxBatchOperator`` DAG file's text with ``cache_path`` from the run's conf."""
    marker = "doitong_conn_id="
    if source.count(marker) != 1:
        raise ValueError("the DAG file does not name its connection once")
    return source.replace(marker, CACHE_ARGUMENT + marker)


def s3_url(key: str) -> str:
    """``s3://aws_default@doitong-images/<key>``: a key of the bucket as ObjectStoragePath reads it."""
    return f"s3://{AWS_CONN_ID}@{BUCKET}/{key}"
