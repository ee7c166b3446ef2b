"""Webhooks waiting to be sent, and the bookkeeping of each delivery's attempts and end."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from airflow_provider_doitong.client.webhooks import sign_payload
from doitong_emulator.accounts import AccountState
from doitong_emulator.jobs import Job
from doitong_emulator.stats import Stats


@dataclass(frozen=True)
class WebhookDelivery:
    """One prepared webhook POST (``headers`` include the signature)."""

    job_id: str
    url: str
    body: bytes
    headers: dict[str, str]


class WebhookOutbox:
    """The queue of jobs whose webhook is due. Not thread-safe by itself; the state's lock guards it.

    A job's ``webhook`` field moves ``pending`` -> ``sending`` -> ``delivered`` / ``failed``; an
    interrupted delivery goes back to ``pending`` and is queued again.
    """

    def __init__(self) -> None:
        self._queue: deque[str] = deque()

    def push(self, job_id: str) -> None:
        """Queue a job's webhook."""
        self._queue.append(job_id)

    def clear(self) -> None:
        """Forget every queued webhook."""
        self._queue.clear()

    def __bool__(self) -> bool:
        return bool(self._queue)

    def take(
        self,
        *,
        jobs: Mapping[str, Job],
        account_of: Callable[[str], AccountState | None],
        output_url: Callable[[Job], str],
    ) -> list[WebhookDelivery]:
        """Prepare every queued delivery and mark it as being sent."""
        deliveries = []
        while self._queue:
            job = jobs.get(self._queue.popleft())
            if job is None or job.webhook != "pending" or not job.webhook_url:
                continue
            account = account_of(job.account)
            if account is None:
                continue
            body = json.dumps(job.webhook_payload(output_url=output_url(job)), separators=(",", ":")).encode()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "doitong-emulator",
                "X-Doitong-Signature": sign_payload(body, account.config.webhook_secret),
            }
            job.webhook = "sending"
            deliveries.append(WebhookDelivery(job.id, job.webhook_url, body, headers))
        return deliveries

    def finished(self, job: Job, stats: Stats, *, delivered: bool | None) -> None:
        """Record a delivery's end: ``True`` delivered, ``False`` given up, ``None`` interrupted."""
        if delivered is None:
            job.webhook = "pending"
            self._queue.append(job.id)
        elif delivered:
            job.webhook = "delivered"
            stats.webhooks_delivered += 1
        else:
            job.webhook = "failed"
            stats.webhooks_failed += 1
