"""The "Doitong image" extra link: opens a finished job's image."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

from airflow_provider_doitong.client.safety import UrlRefused, parse_strict_url

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class DoitongImageLink(BaseOperatorLink):
    """Links a task to the image its Doitong job made (the API's output URL, [A] valid for 24 hours).

    Airflow asks for the link when a try ends and stores it under :attr:`xcom_key`; the operator
    keeps the URL of the image it finished as ``image_url`` (empty while the job is still running),
    once the download check accepted it. The link is judged again here by the same strict URL
    grammar (:func:`~airflow_provider_doitong.client.safety.parse_strict_url`): a URL a browser could
    read as another host (a backslash, user info, an odd authority) is never linked.
    """

    name = "Doitong image"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = getattr(operator, "image_url", None)
        try:
            judged = parse_strict_url(url)
        except UrlRefused:
            return ""
        return judged.url if judged.scheme in ("http", "https") else ""
