"""Webhook delivery: a ticker settles due jobs and one task per webhook POSTs it, with retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import httpx

from doitong_emulator.state import EmulatorState, WebhookDelivery

log = logging.getLogger(__name__)

#: The longest the ticker sleeps, so work queued from other threads is picked up quickly.
MAX_TICK_SECONDS = 0.05
MIN_TICK_SECONDS = 0.002


class WebhookDispatcher:
    """Runs inside the server's event loop while it serves."""

    def __init__(self, *, state: EmulatorState) -> None:
        self.state = state
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(timeout=state.config.webhook_timeout_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the ticker and listen for new jobs."""
        self.state.on_new_job = self.wake
        self._ticker = asyncio.create_task(self._tick(), name="doitong-emulator-ticker")

    def wake(self) -> None:
        """Make the ticker look at the jobs again (callable from any thread)."""
        self._loop.call_soon_threadsafe(self._wake.set)

    async def stop(self) -> None:
        """Cancel the ticker and deliveries in progress (they are retried after a restart)."""
        if self.state.on_new_job == self.wake:
            self.state.on_new_job = None
        tasks = [task for task in (self._ticker, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._client.aclose()

    async def _tick(self) -> None:
        while True:
            try:
                next_due = self.state.settle()
                for delivery in self.state.take_webhooks():
                    task = asyncio.create_task(self._deliver(delivery))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
            except Exception:
                log.exception("The emulator's job ticker failed; continuing")
                next_due = None
            delay = MAX_TICK_SECONDS
            if next_due is not None:
                delay = min(max(next_due - self.state.clock(), MIN_TICK_SECONDS), MAX_TICK_SECONDS)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        config = self.state.config
        try:
            for attempt in range(config.webhook_attempts):
                if attempt:
                    await asyncio.sleep(config.webhook_backoff_s * config.time_scale * 2 ** (attempt - 1))
                if not self.state.webhook_attempted(delivery.job_id):
                    return
                try:
                    response = await self._client.post(
                        delivery.url, content=delivery.body, headers=delivery.headers
                    )
                except httpx.HTTPError as error:
                    log.info(
                        "Webhook for job %s, attempt %d: %s",
                        delivery.job_id,
                        attempt + 1,
                        type(error).__name__,
                    )
                    continue
                if response.is_success:
                    self.state.webhook_finished(delivery.job_id, delivered=True)
                    return
                log.info(
                    "Webhook for job %s, attempt %d: HTTP %d",
                    delivery.job_id,
                    attempt + 1,
                    response.status_code,
                )
            log.warning(
                "Giving up the webhook for job %s after %d attempts", delivery.job_id, config.webhook_attempts
            )
            self.state.webhook_finished(delivery.job_id, delivered=False)
        except asyncio.CancelledError:
            self.state.webhook_finished(delivery.job_id, delivered=None)
            raise
