"""``DoitongHook``: an Airflow ``doitong`` connection turned into Doitong clients."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow_provider_doitong._compat import (
    AirflowFailException,
    AirflowNotFoundException,
    BaseHook,
    aextra,
    aget_connection,
    amask_secret,
    connection_form_widgets,
    mask_secret,
)
from airflow_provider_doitong.client import AsyncDoitongClient, DoitongClient, DoitongError, RetryPolicy
from airflow_provider_doitong.client.board import WindowBoard
from airflow_provider_doitong.client.contract import PLANS
from airflow_provider_doitong.client.slots import SlotBoard
from airflow_provider_doitong.hooks.connection import (
    CONN_FIELDS,
    CONN_TYPE,
    DEFAULT_CONN_ID,
    UI_FIELD_BEHAVIOUR,
    ConnectionSettings,
    DoitongConnectionInvalid,
    settings_from_fields,
)
from airflow_provider_doitong.hooks.observers import observer_for


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
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The connection form's extra fields for Airflow 3.0 and 3.1 (later ones read ``conn-fields``)."""
        return connection_form_widgets(CONN_FIELDS)

    @classmethod
    def conn_fields(cls) -> dict[str, Any]:
        """The connection's extra fields, as declared in ``get_provider_info()``."""
        return CONN_FIELDS

    def _read(self, conn: Any, extra: dict[str, Any]) -> ConnectionSettings:
        if conn.conn_type != CONN_TYPE:
            raise DoitongConnectionInvalid(
                f"connection {self.doitong_conn_id!r} is of type {conn.conn_type!r}, not {CONN_TYPE!r}"
            )
        return settings_from_fields(
            conn_id=self.doitong_conn_id,
            host=conn.host,
            schema=conn.schema,
            port=conn.port,
            password=conn.password,
            extra=extra,
        )

    @staticmethod
    def _secrets(settings: ConnectionSettings) -> list[str]:
        return [s for s in (settings.api_key, settings.webhook_secret) if s]

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The connection, read and checked (sync: use :meth:`aget_settings` in a trigger)."""
        conn = self.get_connection(self.doitong_conn_id)
        settings = self._read(conn, conn.extra_dejson)
        for secret in self._secrets(settings):
            mask_secret(secret)
        return settings

    def checked_settings(self) -> ConnectionSettings:
        """:attr:`settings` for an operator: a missing or unusable connection fails the task at once.

        No retry can fix either, so the answer is a final ``AirflowFailException`` naming the problem
        (never a secret), raised before any request or credit is spent.
        """
        try:
            return self.settings
        except AirflowNotFoundException:
            raise AirflowFailException(
                f"The Doitong connection {self.doitong_conn_id!r} is not defined"
            ) from None
        except DoitongConnectionInvalid as exc:
            raise AirflowFailException(f"Invalid Doitong connection: {exc}") from None

    def reread_settings(self) -> ConnectionSettings:
        """The connection read again, not from this hook's cache (e.g. after a key rotation)."""
        self.__dict__.pop("settings", None)
        return self.settings

    def credit_floor(self, task_floor: int | None) -> int | None:
        """The credit floor a task keeps to: its own ``credit_floor``, else the connection's extra."""
        return task_floor if task_floor is not None else self.checked_settings().credit_floor

    def cache_path(self, task_path: str | None) -> str | None:
        """The image cache a task uses: its own ``cache_path``, else the connection's extra."""
        return task_path if task_path else self.checked_settings().cache_path

    def current_api_key(self) -> str:
        """The connection's API key read again now, not from this hook's cache.

        Every wait that the API refused the key to (a rotated key) reads it through this, or
        :meth:`acurrent_api_key` in the triggerer, once, and goes on with the same client
        (``set_api_key``); a second refusal in a row is final.
        """
        return self.reread_settings().api_key

    async def acurrent_api_key(self) -> str:
        """:meth:`current_api_key`, without blocking the triggerer's event loop."""
        return (await self.aget_settings()).api_key

    async def aget_settings(self) -> ConnectionSettings:
        """The connection, read fresh on every call, its secrets masked without blocking the event loop.

        The triggerer's loop must not wait on the supervisor: the compat layer picks the safe call
        for each Airflow release.
        """
        conn = await aget_connection(self, self.doitong_conn_id)
        settings = self._read(conn, await aextra(conn))
        for secret in self._secrets(settings):
            await amask_secret(secret)
        return settings

    def _client_kwargs(self, settings: ConnectionSettings) -> dict[str, Any]:
        return {
            "api_key": settings.api_key,
            "base_url": settings.base_url,
            "transport": settings.transport,
            "timeout": settings.timeout,
            "retry_policy": self.retry_policy,
            "download_policy": settings.download_policy(),
            "observer": observer_for(self.doitong_conn_id),
            "board": WindowBoard.for_account(base_url=settings.base_url, api_key=settings.api_key),
            "slots": SlotBoard.for_account(
                base_url=settings.base_url,
                api_key=settings.api_key,
                concurrency=PLANS[settings.plan].concurrent_jobs,
            ),
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
