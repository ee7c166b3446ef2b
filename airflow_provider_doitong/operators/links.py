"""The operators' extra links: the stored image, the batch's contact sheet and its manifest.

They open the pages of the provider's Airflow plugin (:mod:`airflow_provider_doitong.ui`), served
by the api-server behind Airflow's login and the DAG's permissions. A link names only the task
instance; the plugin finds the files from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_provider_doitong import ui
from airflow_provider_doitong.client.safety import UrlRefused, parse_strict_url

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


def _page(page: str, ti_key: Any) -> str:
    return ui.page_url(
        page,
        dag_id=ti_key.dag_id,
        run_id=ti_key.run_id,
        task_id=ti_key.task_id,
        map_index=int(getattr(ti_key, "map_index", -1)),
    )


class DoitongImageLink(BaseOperatorLink):
    """Links a ``FluxGenerateOperator`` task to its image.

    The stored image (through the plugin) when the operator wrote one (``stored_image``); else the
    API's output URL, [A] valid for 24 hours (``image_url``); empty while the job is still running.
    Airflow asks for the link when a try ends and stores it under :attr:`xcom_key`. The output URL
    is judged again here by the same strict URL grammar as downloads
    (:func:`~airflow_provider_doitong.client.safety.parse_strict_url`): a URL a browser could read as
    another host (a backslash, user info, an odd authority) is never linked.
    """

    name = "Doitong image"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        if getattr(operator, "stored_image", None):
            return _page(ui.IMAGE_PAGE, ti_key)
        url = getattr(operator, "image_url", None)
        if not isinstance(url, str) or not url:
            return ""
        try:
            judged = parse_strict_url(url)
        except UrlRefused:
            return ""
        return judged.url if judged.scheme in ("http", "https") else ""


class DoitongContactSheetLink(BaseOperatorLink):
    """Links a ``FluxBatchOperator`` task to its contact sheet (progress while it runs)."""

    name = "Doitong contact sheet"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return _page(ui.SHEET_PAGE, ti_key)


class DoitongManifestLink(BaseOperatorLink):
    """Links a ``FluxBatchOperator`` task to its ``manifest.json``."""

    name = "Doitong manifest"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return _page(ui.MANIFEST_PAGE, ti_key)


#: The batch operator's links.
BATCH_LINKS = (DoitongContactSheetLink(), DoitongManifestLink())


def publish(operator: BaseOperator, context: Any) -> None:
    """Store a task's links now, so the UI shows them while it runs (Airflow stores them when a try ends).

    :param context: the task's context.
    """
    ti = context["ti"]
    for link in operator.operator_extra_links:
        ti.xcom_push(key=link.xcom_key, value=link.get_link(operator, ti_key=ti))
