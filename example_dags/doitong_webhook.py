"""
### Doitong webhooks

Submit the prompts with a `webhook_url` and `wait_for_completion=False`: each task ends as soon as
Doitong accepts its job, and Doitong POSTs the finished job to the URL. No Airflow task waits.

Run the receiver somewhere Doitong can reach (it verifies `X-Doitong-Signature` with the account's
webhook secret, deduplicates redeliveries by job id and records each job once; it needs
`pip install "airflow-provider-doitong[examples]"`):

```bash
DOITONG_WEBHOOK_SECRET=... python example_dags/webhook_receiver.py --port 8799
```

and set the `webhook_url` param (default: `$DOITONG_WEBHOOK_URL`, else the receiver on this host).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pendulum
from airflow.providers.common.compat.sdk import AirflowSkipException
from airflow.sdk import DAG, Param, task

from airflow_provider_doitong.client import contract
from airflow_provider_doitong.operators.flux import FluxGenerateOperator

log = logging.getLogger(__name__)

DAG_ID = "doitong_webhook"
WEBHOOK_URL_ENV = "DOITONG_WEBHOOK_URL"
DEFAULT_WEBHOOK_URL = "http://127.0.0.1:8799/doitong/webhook"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["doitong", "example"],
    doc_md=__doc__,
    params={
        "prompts": Param(
            [
                "A hot-air balloon festival over a desert canyon at sunrise, wide-angle photograph",
                "Watercolour map of an imaginary archipelago with sea monsters in the margins",
            ],
            type="array",
            items={"type": "string", "minLength": 1, "maxLength": contract.PROMPT_MAX_CHARS},
            minItems=1,
        ),
        "webhook_url": Param(
            os.environ.get(WEBHOOK_URL_ENV) or DEFAULT_WEBHOOK_URL,
            type="string",
            pattern="^https?://",
            description="Where Doitong POSTs each finished job.",
        ),
        "width": Param(
            768,
            type="integer",
            minimum=contract.MIN_SIDE,
            maximum=contract.MAX_SIDE,
            multipleOf=contract.SIDE_MULTIPLE,
        ),
        "height": Param(
            768,
            type="integer",
            minimum=contract.MIN_SIDE,
            maximum=contract.MAX_SIDE,
            multipleOf=contract.SIDE_MULTIPLE,
        ),
    },
) as dag:

    @task
    def prompts(params: dict[str, Any] | None = None) -> list[str]:
        """The run's prompts, trimmed, each once.

        :param params: the run's params.
        """
        assert params is not None
        unique = list(dict.fromkeys(p.strip() for p in params["prompts"] if p.strip()))
        if not unique:
            raise AirflowSkipException("No prompts given")
        return unique

    @task
    def report(jobs: list[dict[str, Any]], params: dict[str, Any] | None = None) -> list[str]:
        """Log the submitted jobs; their results arrive at the webhook.

        :param jobs: the ``submit`` results.
        :param params: the run's params.
        """
        assert params is not None
        job_ids = [job["job_id"] for job in jobs]
        log.info(
            "Submitted %d jobs; Doitong will POST each to %s: %s",
            len(job_ids),
            params["webhook_url"],
            ", ".join(job_ids),
        )
        return job_ids

    submitted = FluxGenerateOperator.partial(
        task_id="submit",
        width="{{ params.width }}",
        height="{{ params.height }}",
        webhook_url="{{ params.webhook_url }}",
        wait_for_completion=False,
    ).expand(prompt=prompts())
    report(submitted.output)
