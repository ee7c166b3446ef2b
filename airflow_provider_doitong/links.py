"""The "Doitong image" extra link: opens a finished job's image."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey
    from airflow.sdk import BaseOperator

#: The XCom key the operator stores the image URL under.
IMAGE_URL_XCOM_KEY = "doitong_image_url"


class DoitongImageLink(BaseOperatorLink):
    """Links a task to the image its Doitong job made (the API's output URL, [A] valid for 24 hours)."""

    name = "Doitong image"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        url = XCom.get_value(key=IMAGE_URL_XCOM_KEY, ti_key=ti_key)
        return url if isinstance(url, str) else ""
