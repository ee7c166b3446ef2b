"""What a task remembers of its submission, and what its next try does with it: pure decisions.

The API has no idempotency key and no job listing, so a task that must never pay twice for one
image keeps its own record in the task state store, under :data:`STATE_KEY`:

- ``submitting`` before the POST (no job id yet): if the try dies before the answer, the next try
  knows a job *may* exist and was charged;
- ``refused`` when the answer proved no job was made (a 429, a connection never made), with how
  many refusals came in a row, so the backoff keeps growing across deferrals and restarts;
- ``submitted`` with the job id, as soon as the answer came;
- ``stored`` once the image is stored and the try is about to succeed.

Each record carries the fingerprint of the rendered request (model, prompt, size, quality, version;
:mod:`~airflow_provider_doitong.client.fingerprint`), so a job is only ever reused for the very
request it was made for: after a templated prompt changed and the task was cleared, the stored job
is not the new prompt's image.

:func:`plan` turns the record into the next step; :func:`after_read` finishes that decision once
the stored job was read back.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass
from typing import Any, Protocol

from airflow_provider_doitong.client.contract import JobStatus
from airflow_provider_doitong.client.errors import (
    DoitongConnectionError,
    DoitongError,
    DoitongProtocolError,
    DoitongServerError,
    DoitongUnauthorized,
)
from airflow_provider_doitong.client.fingerprint import fingerprint, recognises
from airflow_provider_doitong.client.models import ImageRequest, Job
from airflow_provider_doitong.client.retry import is_transient

#: The task state store key of the record. Renaming it strands the records of running tasks.
STATE_KEY = "doitong_submission"
#: ``on_clear``: a cleared task whose request did not change reuses its paid image, or makes a new one.
ON_CLEAR = ("reuse", "regenerate")
#: ``on_ambiguous_submission``: after a submission whose answer was lost, fail, or submit again.
ON_AMBIGUOUS = ("fail", "resubmit")


class RecordState(str, enum.Enum):
    SUBMITTING = "submitting"
    REFUSED = "refused"
    SUBMITTED = "submitted"
    STORED = "stored"


#: States that carry no job id.
_WITHOUT_JOB = frozenset({RecordState.SUBMITTING, RecordState.REFUSED})


class Action(str, enum.Enum):
    """The next step of a try."""

    #: Submit the request (a new job, a new charge).
    SUBMIT = "submit"
    #: Read the recorded job back before deciding.
    READ = "read"
    #: Wait for the recorded job.
    WAIT = "wait"
    #: The recorded job is completed: fetch its image, pay nothing.
    FINISH = "finish"
    #: A submission was sent and its answer lost: a job may exist, and was charged.
    AMBIGUOUS = "ambiguous"


@dataclass(frozen=True, kw_only=True)
class Record:
    """One task's record of its submission (see the module docstring).

    :param job_id: the job, once the submission's answer came.
    :param at: the Unix time of the last change.
    :param refusals: for ``refused``, the refusals in a row so far.
    """

    state: RecordState
    fingerprint: str
    job_id: str | None = None
    at: float = 0.0
    refusals: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "fingerprint": self.fingerprint,
            "job_id": self.job_id,
            "at": self.at,
            "refusals": self.refusals,
        }

    @classmethod
    def from_json(cls, value: Any) -> Record | None:
        """Read a stored value; ``None`` for anything this version did not write."""
        if not isinstance(value, dict):
            return None
        try:
            state = RecordState(value.get("state"))
        except ValueError:
            return None
        fp, job_id = value.get("fingerprint"), value.get("job_id")
        if not isinstance(fp, str) or not (job_id is None or isinstance(job_id, str)):
            return None
        if (job_id is None) != (state in _WITHOUT_JOB):
            return None
        at, refusals = value.get("at"), value.get("refusals", 0)
        return cls(
            state=state,
            fingerprint=fp,
            job_id=job_id,
            at=float(at) if isinstance(at, int | float) else 0.0,
            refusals=refusals if isinstance(refusals, int) and refusals > 0 else 0,
        )


class RecordStore(Protocol):
    """Where a task keeps its record: Airflow's task state store, or anything with its three calls."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


@dataclass(frozen=True)
class Records:
    """A task's record of its submission of one rendered request, read and written in one place.

    :param store: the task's store; ``None`` (no store, before Airflow 3.3) keeps nothing.
    :param request: the rendered request every record written here is for (kept by its
        :func:`~airflow_provider_doitong.client.fingerprint.fingerprint`).
    """

    store: RecordStore | None
    request: ImageRequest

    def plan(self, *, on_clear: str) -> Step:
        """:func:`plan` for what the store holds."""
        stored = None if self.store is None else self.store.get(STATE_KEY)
        return plan(stored, request=self.request, on_clear=on_clear)

    def save(self, state: RecordState, job_id: str | None = None, *, refusals: int = 0) -> None:
        if self.store is not None:
            record = Record(
                state=state,
                fingerprint=fingerprint(self.request),
                job_id=job_id,
                at=time.time(),
                refusals=refusals,
            )
            self.store.set(STATE_KEY, record.to_json())

    def forget(self) -> None:
        if self.store is not None:
            self.store.delete(STATE_KEY)


@dataclass(frozen=True)
class Step:
    """What a try does next, and why (for the task log).

    :param job: the job as read back, for :attr:`Action.WAIT` and :attr:`Action.FINISH`.
    :param refusals: for :attr:`Action.SUBMIT`, the refusals in a row before this try.
    """

    action: Action
    reason: str
    job_id: str | None = None
    job: Job | None = None
    refusals: int = 0


def plan(stored: Any, *, request: ImageRequest, on_clear: str) -> Step:
    """The first step of a try, from what the task state store holds.

    :param stored: the value under :data:`STATE_KEY` (``None`` if there is none).
    :param request: this try's rendered request.
    :param on_clear: ``reuse`` or ``regenerate``, for a task cleared after it succeeded.
    """
    if stored is None:
        return Step(Action.SUBMIT, "no earlier submission")
    record = Record.from_json(stored)
    if record is None:
        return Step(
            Action.SUBMIT, f"the stored submission record is not one this version reads: {stored!r:.120}"
        )
    if not recognises(record.fingerprint, request):
        earlier = f"job {record.job_id}" if record.job_id else "an earlier submission"
        return Step(
            Action.SUBMIT, f"the request changed since {earlier} (model, prompt, size, quality or version)"
        )
    if record.state is RecordState.SUBMITTING:
        return Step(Action.AMBIGUOUS, "an earlier try sent this request and never got the answer")
    if record.state is RecordState.REFUSED:
        return Step(
            Action.SUBMIT,
            f"refused {record.refusals} times in a row so far (no job)",
            refusals=record.refusals,
        )
    if record.state is RecordState.STORED and on_clear == "regenerate":
        return Step(
            Action.SUBMIT,
            f"job {record.job_id} already made this image and the task ran again; on_clear='regenerate'",
        )
    return Step(Action.READ, f"job {record.job_id} was submitted for this request", job_id=record.job_id)


def after_read(job_id: str, read: Job | None | DoitongError) -> Step:
    """The step after reading the recorded job back.

    :param read: the job, ``None`` if the API does not know it, or the error the read raised.
    :raises DoitongError: a read error that waiting cannot cure (a 400, a 402...).
    """
    if isinstance(read, DoitongError):
        # The wait rides out an unavailable API, and re-reads the connection after a 401.
        if is_transient(read) or isinstance(read, DoitongProtocolError | DoitongUnauthorized):
            return Step(
                Action.WAIT, f"job {job_id} could not be read now ({read}); waiting for it", job_id=job_id
            )
        raise read
    if read is None:
        return Step(Action.SUBMIT, f"the API does not know job {job_id}")
    if read.status is JobStatus.COMPLETED:
        return Step(
            Action.FINISH, f"job {job_id} is completed: its image is reused at no new charge", job_id, read
        )
    if read.status is JobStatus.FAILED:
        return Step(Action.SUBMIT, f"job {job_id} failed (refunded)")
    return Step(Action.WAIT, f"job {job_id} is {read.raw_status}: reattaching", job_id, read)


def may_have_created_job(error: BaseException) -> bool:
    """Whether a failed submission may still have created (and charged) a job.

    Only a 5xx, an answer that broke the contract, or a connection lost after the request was
    sent leave that open; any other HTTP answer (400, 401, 402, 429) and a connection never made
    prove no job exists.
    """
    if isinstance(error, DoitongConnectionError):
        return error.request_sent
    return isinstance(error, DoitongServerError | DoitongProtocolError) or not isinstance(error, DoitongError)


def job_result(job: Job, *, prompt: str, output_path: str | None) -> dict[str, Any]:
    """The operator's XCom value: plain JSON.

    :param job: the job as last read.
    :param prompt: the prompt sent.
    :param output_path: where the image was written, if anywhere.
    """
    return {
        "job_id": job.id,
        "status": job.status.value,
        "url": job.url,
        "width": job.width,
        "height": job.height,
        "credit_cost": job.credit_cost,
        "provider": job.provider,
        "prompt": prompt,
        "output_path": output_path,
        "created_at": job.created_at,
        "completed_at": job.completed_at,
    }
