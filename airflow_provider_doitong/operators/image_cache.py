"""The image cache in both operators: which cache a task uses, and the single image's hit, wait and fill.

The cache itself (entries, verification, claims) is :mod:`~airflow_provider_doitong.storage.cache`;
a batch's use of it is :mod:`~airflow_provider_doitong.batch.cache`. This module reads the task's
``cache_path`` (else the connection's ``cache_path`` extra), ``cache_max_age`` and
``cache_refresh``, and carries out ``FluxGenerateOperator``'s three steps: before anything is
spent, a hit (or the image another task is making, waited for) is stored as the task's image
for 0 credits; else the key is claimed; once the paid image is stored, it fills the cache.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_doitong._compat import AirflowFailException
from airflow_provider_doitong.batch.budget import counting_hits
from airflow_provider_doitong.client import ImageRequest, Job
from airflow_provider_doitong.client.times import seconds, utc_iso
from airflow_provider_doitong.hooks.connection import read_cache_path
from airflow_provider_doitong.operators.batch_task import owner as task_owner
from airflow_provider_doitong.storage import Location, Place, UnsafeOutputPath, store_image
from airflow_provider_doitong.storage.cache import CacheEntry, ImageCache

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_doitong.hooks.doitong import DoitongHook

log = logging.getLogger(__name__)


def open_cache(
    hook: DoitongHook, cache_path: str | None, *, max_age: float | timedelta | None, refresh: bool
) -> ImageCache | None:
    """The task's image cache: its ``cache_path``, else the connection's extra; ``None``: no cache.

    :raises AirflowFailException: for a ``cache_path`` that is not a folder's path or URI.
    """
    try:
        path = hook.cache_path(read_cache_path(cache_path))
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from None
    if path is None:
        return None
    return ImageCache(Location.of(path), max_age=seconds(max_age), refresh=refresh)


def max_credits_problem(
    cache: ImageCache | None, request: ImageRequest, max_credits: int | None
) -> str | None:
    """Why ``request`` must not be submitted under ``max_credits``, or ``None``: an image the cache
    holds costs 0 credits, so its estimate does not count (looked up, nothing claimed or written,
    only when the estimate is over; the same rule as the batch's, :func:`~airflow_provider_doitong.batch.budget.counting_hits`).
    """

    def over(off: int) -> str | None:
        estimate = request.estimated_credits - off
        if max_credits is None or estimate <= max_credits:
            return None
        return f"This image is estimated at {estimate} credits, over max_credits={max_credits}; nothing was submitted"

    return counting_hits(
        over, lambda: request.estimated_credits if cache is not None and cache.lookup(request) else 0
    )


def claimant(context: Context) -> str:
    """The task instance as a claim's owner: the same across its tries and deferrals."""
    return json.dumps(task_owner(context), sort_keys=True)


def before_submit(
    cache: ImageCache, request: ImageRequest, context: Context, *, deadline: float | None, log: Any
) -> CacheEntry | None:
    """The image of ``request`` from the cache, or ``None`` once this task holds the key's claim.

    A key another task is making is waited for (up to ``deadline``; see :meth:`ImageCache.wait`).
    """
    owner = claimant(context)
    entry, claimed = cache.take(request, owner)
    if entry is None and not claimed:
        log.info("Another task is making this image (image cache %s); waiting for it", cache.shown)
        entry = cache.wait(request, owner, deadline=deadline)
    if entry is not None:
        log.info(
            "Image cache %s: a hit, made by Doitong job %s; nothing is submitted (0 credits)",
            cache.shown,
            entry.job_id,
        )
    return entry


def store_hit(
    entry: CacheEntry, request: ImageRequest, location: Location, context: Context
) -> tuple[Location, dict[str, Any]]:
    """Copy a hit to ``output_path`` (a folder gets ``<job id>.<ext>``) and make the task's result:
    the job that made the image, ``credit_cost`` 0, ``cached`` and its ``source_job_id``.

    :raises AirflowFailException: if the output cannot take the image.
    """
    try:
        path = store_image(location, entry.job_id, entry.data, owner=task_owner(context))
    except (OSError, UnsafeOutputPath) as exc:
        raise AirflowFailException(f"output_path: the cached image cannot be written ({exc})") from None
    where = Location.of(path)
    result = {
        "job_id": entry.job_id,
        "status": "completed",
        "url": None,
        "width": request.width,
        "height": request.height,
        "credit_cost": 0,
        "provider": request.provider,
        "prompt": request.prompt,
        "output_path": where.shown,
        "created_at": utc_iso(entry.created_at),
        "completed_at": utc_iso(entry.created_at),
        "cached": True,
        "source_job_id": entry.job_id,
    }
    return where, result


def after_store(
    cache: ImageCache, request: ImageRequest, job: Job, stored: Location | None, context: Context
) -> None:
    """Fill the cache with the image just stored (read back from where it went) and release the claim.

    The task's image is stored already: an output that cannot be read back leaves the cache unfilled
    (logged), never fails the task, and the claim is released either way.
    """
    try:
        data = None if stored is None else Place(stored.path.parent).read(stored.path.name)
    except (OSError, UnsafeOutputPath) as exc:
        data = None
        log.warning("Not filling the image cache %s: %s", cache.shown, exc)
    try:
        if data is not None:
            cache.fill(request, data=data, job_id=job.id, credits=job.credit_cost)
    finally:
        cache.release(request, claimant(context))
