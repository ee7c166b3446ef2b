"""Fetching and storing a finished job's image, for every operator that writes one.

The client checks the download (an allowed host, a capped body, a whole image) and
:func:`~airflow_provider_doitong.storage.store_image` the file (a safe name inside the folder, the
extension from the bytes, an atomic write); this module only moves the bytes between them. What a
refusal means for the task is :func:`~airflow_provider_doitong.outcomes.output_error`'s: a refused
host, an over-large body or an unsafe path fails the task without retries (the same answer would
come again); any other failure fails the try.
"""

from __future__ import annotations

from typing import Any, Protocol

from airflow.sdk import ObjectStoragePath

from airflow_provider_doitong.client import (
    DoitongClient,
    DoitongError,
    DoitongProtocolError,
    DoitongUntrustedOutput,
)
from airflow_provider_doitong.client.safety import check_download_url
from airflow_provider_doitong.outcomes import output_error
from airflow_provider_doitong.storage import UnsafeOutputPath, shown, store_image


class TaskLog(Protocol):
    """What these functions log through: a task's ``self.log`` or a ``logging.Logger``."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


def fetch_and_store(
    client: DoitongClient,
    *,
    job_id: str,
    url: str | None,
    location: str | ObjectStoragePath,
    log: TaskLog,
    name: str | None = None,
) -> str:
    """Download a job's image and write it to ``location`` (a folder gets ``<safe name>.<ext>``).

    :param name: the file stem in a folder (default: the job id); made safe either way.
    :return: where it went, as users write it (a local path or a URI).
    :raises AirflowFailException: for a refused host, an over-large body or an unsafe path.
    :raises AirflowException: for any other failure (the try fails; a retry may succeed).
    """
    try:
        if not url:
            raise DoitongProtocolError(f"Doitong job {job_id} completed without an output URL")
        data = client.download(url)
        path = store_image(location, name if name is not None else job_id, data)
    except (DoitongError, UnsafeOutputPath) as exc:
        raise output_error(exc, job_id=job_id) from None
    where = shown(path)
    log.info("Wrote the image of Doitong job %s (%d bytes) to %s", job_id, len(data), where)
    return where


def link_url(
    client: DoitongClient,
    *,
    job_id: str,
    url: str | None,
    log: TaskLog,
) -> str | None:
    """An output URL fit for a UI link: only one on an allowed download host, else ``None``."""
    if not url:
        return None
    try:
        return check_download_url(url, client.download_policy.allowed_hosts)
    except DoitongUntrustedOutput as exc:
        log.warning("No image link for Doitong job %s: %s", job_id, exc)
        return None
