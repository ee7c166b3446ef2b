"""The "Doitong image" extra link: opens a finished job's image."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class DoitongImageLink(BaseOperatorLink):
    """Links a task to the image its Doitong job made (the API's output URL, [A] valid for 24 hours).

    Airflow asks for the link when a try ends and stores it under :attr:`xcom_key`; the operator
    keeps the URL of the image it finished as ``image_url`` (empty while the job is still running).
    """

    name = "Doitong image"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = getattr(operator, "image_url", None)
        return url if isinstance(url, str) else ""
