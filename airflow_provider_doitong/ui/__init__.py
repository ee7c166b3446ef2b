"""The batch's images in the Airflow UI: a plugin whose FastAPI app the api-server mounts at ``/doitong``.

Its pages, behind Airflow's own authentication and the auth manager's DAG permissions:

* ``/doitong/batch?dag_id=&run_id=&task_id=&map_index=``: a ``FluxBatchOperator`` task instance's
  contact sheet (thumbnails, prompts, credits, failures, and while the batch runs its progress,
  refreshed every few seconds);
* ``/doitong/batch/manifest.json?...``: its manifest; ``/doitong/batch/file?...&name=``: one image;
* ``/doitong/image?...``: the image a ``FluxGenerateOperator`` task instance stored.

Where the images are comes from the task instance, never from the request: its rendered
``output_path`` (what Airflow keeps of its templates, which no API call can change). A batch's
files are served only if its manifest (or progress snapshot) belongs to that very task instance
and lists them, and only from inside that folder. The extra links of both operators
(:mod:`airflow_provider_doitong.operators.links`) point here. The URLs are built in this module, which
imports neither FastAPI nor the api-server, so the worker can make links too.
"""

from __future__ import annotations

from urllib.parse import urlencode

from airflow_provider_doitong._compat import api_base_url

#: Where the api-server mounts the plugin's app.
URL_PREFIX = "/doitong"
#: The pages, under :data:`URL_PREFIX`.
SHEET_PAGE = "batch"
MANIFEST_PAGE = "batch/manifest.json"
FILE_PAGE = "batch/file"
IMAGE_PAGE = "image"


def ti_query(*, dag_id: str, run_id: str, task_id: str, map_index: int, **extra: str) -> str:
    """A task instance (and any ``extra`` parameter) as a URL query string."""
    params = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": str(map_index)}
    return urlencode({**params, **extra})


def page_url(page: str, *, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """The URL of one of the plugin's pages for a task instance, under ``[api] base_url`` when set.

    :param page: :data:`SHEET_PAGE`, :data:`MANIFEST_PAGE` or :data:`IMAGE_PAGE`.
    """
    query = ti_query(dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)
    return f"{api_base_url()}{URL_PREFIX}/{page}?{query}"
