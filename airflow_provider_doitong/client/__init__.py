"""The Doitong API client, usable without Airflow: a sans-IO core with sync and async shells.

Beside the clients stand the API's contract (:mod:`.contract`), the reading of every untrusted value
(:mod:`.untrusted`, :mod:`.safety`) and the decisions both operators share: retries, pacing, waits,
how a try ends (:mod:`.outcomes`) and what a try does with an earlier submission (:mod:`.submission`).
Nothing here imports from the rest of the package.
"""

from __future__ import annotations

from airflow_provider_doitong.client.async_client import AsyncDoitongClient
from airflow_provider_doitong.client.contract import JobStatus
from airflow_provider_doitong.client.downloads import DownloadPolicy
from airflow_provider_doitong.client.errors import (
    DoitongAnswerTooLarge,
    DoitongBadImage,
    DoitongBadRequest,
    DoitongConnectionError,
    DoitongDownloadTimeout,
    DoitongDownloadTooLarge,
    DoitongError,
    DoitongInsufficientCredits,
    DoitongJobFailed,
    DoitongNotFound,
    DoitongProtocolError,
    DoitongRateLimited,
    DoitongServerError,
    DoitongTimeout,
    DoitongUnauthorized,
    DoitongUntrustedOutput,
    DoitongValidationError,
)
from airflow_provider_doitong.client.models import Account, ImageRequest, Job
from airflow_provider_doitong.client.retry import RetryPolicy
from airflow_provider_doitong.client.sync_client import DoitongClient

__all__ = [
    "Account",
    "AsyncDoitongClient",
    "DoitongBadImage",
    "DoitongBadRequest",
    "DoitongClient",
    "DoitongAnswerTooLarge",
    "DoitongConnectionError",
    "DoitongDownloadTimeout",
    "DoitongDownloadTooLarge",
    "DoitongError",
    "DoitongInsufficientCredits",
    "DoitongJobFailed",
    "DoitongNotFound",
    "DoitongProtocolError",
    "DoitongRateLimited",
    "DoitongServerError",
    "DoitongTimeout",
    "DoitongUnauthorized",
    "DoitongUntrustedOutput",
    "DoitongValidationError",
    "DownloadPolicy",
    "ImageRequest",
    "Job",
    "JobStatus",
    "RetryPolicy",
]
