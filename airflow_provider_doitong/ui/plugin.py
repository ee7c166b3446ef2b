"""The Airflow plugin (entry point ``airflow.plugins``: ``doitong``) that serves the batch's images."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_doitong.ui import SHEET_PAGE, URL_PREFIX
from airflow_provider_doitong.ui.app import LazyApp


class DoitongPlugin(AirflowPlugin):
    """Mounts the contact sheet, manifest and image pages (:mod:`airflow_provider_doitong.ui`)."""

    name = "doitong"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Doitong images"}]
    #: A tab on every task instance page (Airflow 3.1+; 3.0 ignores it): the contact sheet inside the UI.
    external_views = [
        {
            "name": "Doitong images",
            "href": f"{URL_PREFIX}/{SHEET_PAGE}?dag_id={{DAG_ID}}&run_id={{RUN_ID}}&task_id={{TASK_ID}}"
            "&map_index={MAP_INDEX}",
            "destination": "task_instance",
            "url_route": "doitong_images",
        }
    ]
