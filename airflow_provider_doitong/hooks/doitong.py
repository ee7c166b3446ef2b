"""``DoitongHook``: an Airflow ``doitong`` connection turned into Doitong clients."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret

from airflow_provider_doitong.client import AsyncDoitongClient, DoitongClient, DoitongError, RetryPolicy
from airflow_provider_doitong.connection import (
    CONN_FIELDS,
    CONN_TYPE,
    DEFAULT_CONN_ID,
    UI_FIELD_BEHAVIOUR,
    ConnectionSettings,
    settings_from_fields,
)


class DoitongHook(BaseHook):
    """Interact with the Doitong image API.

    The connection's host is the base URL (default ``https://api.doitong.com``; the emulator's
    ``http://127.0.0.1:PORT``), its password the API key, and its extras ``plan``, ``transport``,
    ``webhook_secret`` and ``timeout``.

    :param doitong_conn_id: the ``doitong`` connection to use.
    :param retry_policy: overrides the default retry policy.
    """

    conn_name_attr = "doitong_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "Doitong"

    def __init__(
        self,
        *,
        doitong_conn_id: str = DEFAULT_CONN_ID,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.doitong_conn_id = doitong_conn_id
        self.retry_policy = retry_policy

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form, as in ``get_provider_info()``."""
        return {
            "hidden_fields": UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
        }

    @classmethod
    def conn_fields(cls) -> dict[str, Any]:
        """The connection's extra fields, as declared in ``get_provider_info()``."""
        return CONN_FIELDS

    def _settings(self, conn: Any) -> ConnectionSettings:
        settings = settings_from_fields(
            conn_id=self.doitong_conn_id,
            host=conn.host,
            schema=conn.schema,
            port=conn.port,
            password=conn.password,
            extra=conn.extra_dejson,
        )
        mask_secret(settings.api_key)
        if settings.webhook_secret:
            mask_secret(settings.webhook_secret)
        return settings

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The connection, read and checked (sync: use :meth:`aget_settings` in a trigger)."""
        return self._settings(self.get_connection(self.doitong_conn_id))

    async def aget_settings(self) -> ConnectionSettings:
        """The connection, read without blocking the event loop."""
        return self._settings(await self.aget_connection(self.doitong_conn_id))

    def _client_kwargs(self, settings: ConnectionSettings) -> dict[str, Any]:
        return {
            "api_key": settings.api_key,
            "base_url": settings.base_url,
            "transport": settings.transport,
            "timeout": settings.timeout,
            "retry_policy": self.retry_policy,
            "download_policy": settings.download_policy(),
        }

    def get_conn(self) -> DoitongClient:
        """A synchronous client (one ``requests`` session) for this connection."""
        return DoitongClient(**self._client_kwargs(self.settings))

    async def get_async_conn(self, **kwargs: Any) -> AsyncDoitongClient:
        """An asynchronous client (one ``httpx.AsyncClient``); close it with ``aclose()``.

        :param kwargs: passed to :class:`AsyncDoitongClient` (e.g. ``max_connections``).
        """
        return AsyncDoitongClient(**self._client_kwargs(await self.aget_settings()), **kwargs)

    def test_connection(self) -> tuple[bool, str]:
        """Ask for the account: fast, one request, no retries on any error.

        Never raises: a missing or invalid connection is a failed test too.
        """
        try:
            with DoitongClient(
                **{**self._client_kwargs(self.settings), "retry_policy": RetryPolicy(max_attempts=1)}
            ) as client:
                account = client.get_account()
        except Exception as exc:
            return False, str(exc) if isinstance(
                exc, DoitongError | ValueError
            ) else f"{type(exc).__name__}: {exc}"
        return True, f"Connected to Doitong: plan {account.plan}, {account.credits} credits"
