"""The output folder before the first credit, and a finished job's image after it, for every operator.

:func:`check_output` is what both operators run before they submit anything: a probe write in the
final folder and the claim of the folder (``FluxBatchOperator``) or of the file it names
(``FluxGenerateOperator`` with a file ``output_path``); mapped ``FluxGenerateOperator`` tasks share
their folder, so there each image is created exclusively when it is written instead.

The client checks the download (an allowed host, a capped body, a whole image) and
:func:`~airflow_provider_doitong.storage.store_image` the file (a safe name inside the folder, the
extension from the bytes, an atomic write); this module only moves the bytes between them. What a
refusal means for the task is :func:`~airflow_provider_doitong.operators.airflow_errors.output_error`'s: a refused
host, an over-large body or an unsafe path fails the task without retries (the same answer would
come again); any other failure fails the try. :func:`store_completed` is a single job's whole end
(reported, its charge logged, its image stored, its link judged); :func:`announce` puts a task's
result on its outlets' asset events.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from airflow.sdk import Asset, ObjectStoragePath

from airflow_provider_doitong._compat import AirflowFailException
from airflow_provider_doitong.batch.budget import over_estimate
from airflow_provider_doitong.client import (
    DoitongClient,
    DoitongError,
    DoitongJobFailed,
    DoitongNotFound,
    DoitongProtocolError,
    DoitongUntrustedOutput,
    ImageRequest,
    Job,
    observability,
)
from airflow_provider_doitong.client.models import parse_api_time
from airflow_provider_doitong.client.safety import check_download_url
from airflow_provider_doitong.operators.airflow_errors import airflow_error, output_error
from airflow_provider_doitong.operators.batch_task import owner as task_owner
from airflow_provider_doitong.storage import (
    Location,
    OutputClaimed,
    Place,
    UnsafeOutputPath,
    claim_folder,
    claim_output_file,
    names_folder,
    probe,
    shown,
    storage_path,
    store_image,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class TaskLog(Protocol):
    """What these functions log through: a task's ``self.log`` or a ``logging.Logger``."""

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...


def fetch_and_store(
    client: DoitongClient,
    *,
    job_id: str,
    url: str | None,
    location: str | ObjectStoragePath | Location,
    log: TaskLog,
    name: str | None = None,
    owner: Mapping[str, Any] | None = None,
    job: Job | None = None,
    model: str = "",
) -> Location:
    """Download a job's image and write it to ``location`` (a folder gets ``<safe name>.<ext>``).

    :param name: the file stem in a folder (default: the job id); made safe either way.
    :param owner: the task instance, when the folder may be shared: another task's file is never
        replaced (see :func:`~airflow_provider_doitong.storage.store_image`).
    :param job: the job, to report its stored image (and the job's span) to the client's observer.
    :param model: the job's model, for that report.
    :return: where it went (its ``shown`` form is how users write it: a local path or a URI).
    :raises AirflowFailException: for a refused host, an over-large body or an unsafe path.
    :raises AirflowException: for any other failure (the try fails; a retry may succeed).
    """
    try:
        if not url:
            raise DoitongProtocolError(f"Doitong job {job_id} completed without an output URL")
        data = client.download(url)
        downloaded = time.time()
        path = store_image(location, name if name is not None else job_id, data, owner=owner)
    except (DoitongError, UnsafeOutputPath) as exc:
        raise output_error(exc, job_id=job_id) from None
    if job is not None:
        observability.stored(client.observer, trace=job_trace(job, model, downloaded), size=len(data))
    where = Location.of(path)
    log.info("Wrote the image of Doitong job %s (%d bytes) to %s", job_id, len(data), where.shown)
    return where


def read_job(client: DoitongClient, job_id: str, *, conn_id: str) -> Job:
    """A job read back once, or the task's failure (a job the API does not know fails for good)."""
    try:
        job = client.get_job(job_id)
    except DoitongError as exc:
        raise airflow_error(exc, doing=f"Reading Doitong job {job_id} failed", conn_id=conn_id) from None
    if job is None:
        raise airflow_error(DoitongNotFound(f"Doitong job {job_id} does not exist"))
    return job


def job_trace(job: Job, model: str, downloaded: float) -> observability.JobTrace:
    """A single job's life for its span: the API's own times for its creation and end."""
    ended = parse_api_time(job.completed_at)
    created = parse_api_time(job.created_at)
    return observability.JobTrace(
        job_id=job.id,
        model=model,
        credits=job.credit_cost,
        submitted_at=created if created is not None else downloaded,
        ended_at=ended,
        stored_at=time.time(),
        events=(("downloaded", downloaded),),
    )


def observe_end(client: DoitongClient, *, job: Job | None, error: BaseException | None, model: str) -> None:
    """Report a single job's end: completed (with its charge and turnaround) or failed.

    :param job: the completed job, paid for in this try (``None`` for a job an earlier try paid for).
    :param error: why the wait ended otherwise; only a failed job (:class:`DoitongJobFailed`) counts.
    """
    if isinstance(error, DoitongJobFailed):
        client.observer.count(observability.JOBS_FAILED, model=model)
    elif job is not None:
        observability.completed(
            client.observer, model=model, credits=job.credit_cost, turnaround=job.turnaround
        )


def report_charge(log: TaskLog, job: Job, *, reused: bool, estimate: int, max_credits: int | None) -> None:
    """Log what a completed single job cost: nothing now for a job an earlier try paid for, else its
    charge, with a warning when it is over the estimate (the image, paid for, is stored all the same).
    """
    if job.credit_cost is None:
        return
    if reused:
        log.info(
            "Doitong job %s was charged %d credits by an earlier try; reusing it costs 0 credits now",
            job.id,
            job.credit_cost,
        )
        return
    log.info("Doitong job %s charged %d credits", job.id, job.credit_cost)
    note = over_estimate(charged=job.credit_cost, estimate=estimate, max_credits=max_credits)
    if note:
        log.warning("Doitong job %s %s", job.id, note)


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


def check_output(
    context: Context, location: str | ObjectStoragePath | Location, *, whole_folder: bool
) -> None:
    """Check ``output_path`` before anything is submitted: it takes a write, and no other task has it.

    A probe file is created exclusively and removed in the final folder (made when missing). Then
    the claim: of the whole folder (``whole_folder``, a batch), or of the file ``location`` names;
    a folder shared by mapped tasks is not claimed (each image is created exclusively when written).
    The same task instance's retries, resumes and clears find their own claim and go on.

    :param context: the task's context (its task instance owns the claim).
    :raises AirflowFailException: naming ``output_path`` and saying nothing was submitted.
    """
    owner = task_owner(context)
    path = storage_path(location)
    is_folder = whole_folder or names_folder(location, path)
    folder = Place(path if is_folder else path.parent)
    try:
        probe(folder)
        if whole_folder:
            claim_folder(folder, owner)
        elif not is_folder:
            claim_output_file(path, owner)
    except OutputClaimed as exc:
        raise AirflowFailException(
            f"output_path: {exc}; nothing was submitted. Give each run and task its own output_path "
            "(e.g. .../{{ run_id }}/), or delete the claim once no task writes there"
        ) from None
    except (OSError, UnsafeOutputPath) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise AirflowFailException(
            f"output_path {shown(path)} cannot be written ({detail}); nothing was submitted"
        ) from None


def store_completed(
    client: DoitongClient,
    job: Job,
    *,
    request: ImageRequest,
    reused: bool,
    max_credits: int | None,
    location: Location | None,
    context: Context,
    log: TaskLog,
) -> tuple[Location | None, str | None]:
    """A completed single job's end: reported, its charge logged, its image stored, its link judged.

    :param reused: the job was paid for by an earlier try; this try is charged nothing.
    :param location: ``output_path``, if the task stores the image (see :func:`fetch_and_store`).
    :param context: the task's context (its task instance owns the image's file).
    :return: where the image went (``None`` without ``location``), and the URL for the image's link.
    :raises AirflowFailException: when the image cannot be stored for good (see :func:`fetch_and_store`).
    """
    observe_end(client, job=None if reused else job, error=None, model=request.provider)
    report_charge(log, job, reused=reused, estimate=request.estimated_credits, max_credits=max_credits)
    stored = None
    if location is not None:  # checked by the client, never over another task's file
        stored = fetch_and_store(
            client,
            job_id=job.id,
            url=job.url,
            location=location,
            log=log,
            owner=task_owner(context),
            job=job,
            model=request.provider,
        )
    return stored, link_url(client, job_id=job.id, url=job.url, log=log)


def announce(context: Context, outlets: Iterable[Any] | None, result: dict[str, Any]) -> None:
    """Put the task's result on the asset events of its ``outlets`` (as each event's ``extra``)."""
    for outlet in outlets or ():
        if isinstance(outlet, Asset):
            context["outlet_events"][outlet].extra = result
