"""Reading a connection and masking a secret from a trigger, on the triggerer's event loop.

A blocking call to the supervisor (reading a connection, telling it a secret to mask) fails there
on Airflow 3.0 and 3.1: their triggerer bridges it with ``async_to_sync``, which refuses the loop's
own thread. ``BaseHook.aget_connection`` arrived in 3.1, and before 3.3.2 it still masks secrets
with such a blocking call. :func:`aget_connection` and :func:`aextra` (common-compat's) and
:func:`amask_secret` use the async call where the release has a safe one, else the blocking call in
a worker thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson
from airflow.providers.common.compat.sdk import BaseHook, mask_secret

if TYPE_CHECKING:
    from airflow.sdk import Connection


async def aget_connection(hook: BaseHook, conn_id: str) -> Connection:
    """Read a connection without blocking (or deadlocking) the event loop, on every release.

    :param hook: the hook whose ``get_connection``/``aget_connection`` to use.
    """
    return await get_async_connection(conn_id, hook=hook)


async def aextra(conn: Connection) -> dict[str, Any]:
    """A connection's extras, read (and their secrets masked) safely on an event loop."""
    return await get_async_extra_dejson(conn)


async def amask_secret(secret: str) -> None:
    """Mask a secret from an event loop: the SDK's async masking where it exists, else in a thread.

    The thread is asgiref's, as for common-compat's: 3.0 and 3.1's triggerer reaches the supervisor
    through ``async_to_sync``, which from such a thread runs the call on the triggerer's own loop.
    From a plain thread it would start a second loop reading the same socket, and the triggerer's
    replies would come out of order.
    """
    try:
        from airflow.sdk.log import amask_secret as sdk_amask_secret
    except ImportError:
        from asgiref.sync import sync_to_async

        await sync_to_async(mask_secret)(secret)
    else:
        await sdk_amask_secret(secret)
