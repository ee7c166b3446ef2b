"""The Airflow plugin (entry point ``airflow.plugins``: ``doitong``) that serves the batch's images."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_doitong.ui import URL_PREFIX
from airflow_provider_doitong.ui.app import LazyApp


class DoitongPlugin(AirflowPlugin):
    """Mounts the contact sheet, manifest and image pages (:mod:`airflow_provider_doitong.ui`)."""

    name = "doitong"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Doitong images"}]
