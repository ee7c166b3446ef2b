"""Airflow's exception for a Doitong error or job outcome: the answer of
:mod:`~airflow_provider_doitong.client.outcomes`, raised the way Airflow reads it.

:attr:`~airflow_provider_doitong.client.outcomes.Answer.RETRY` is a retryable
:class:`AirflowException` (the task's ``retries`` apply),
:attr:`~airflow_provider_doitong.client.outcomes.Answer.FAIL` a final :class:`AirflowFailException`
and :attr:`~airflow_provider_doitong.client.outcomes.Answer.SKIP` an :class:`AirflowSkipException`.
"""

from __future__ import annotations

from airflow_provider_doitong._compat import AirflowException, AirflowFailException, AirflowSkipException
from airflow_provider_doitong.client.outcomes import Answer, Role, answer_for, describe

_EXCEPTIONS: dict[Answer, type[AirflowException]] = {
    Answer.RETRY: AirflowException,
    Answer.FAIL: AirflowFailException,
    Answer.SKIP: AirflowSkipException,
}


def airflow_error(
    error: BaseException,
    *,
    role: Role = Role.SUBMITTER,
    on_daily_limit: str = "fail",
    doing: str | None = None,
    downloading: bool = False,
    conn_id: str | None = None,
) -> AirflowException:
    """The exception a task raises for ``error`` (raise it ``from None``: the message says it all).

    :param role: see :func:`answer_for`.
    :param on_daily_limit: see :func:`answer_for`.
    :param doing: a few words put before the message, e.g. ``"Doitong submission failed"``.
    :param downloading: see :func:`kind_of`.
    :param conn_id: see :func:`describe`.
    """
    answer = answer_for(error, role=role, on_daily_limit=on_daily_limit, downloading=downloading)
    message = describe(error, conn_id=conn_id)
    if doing:
        message = f"{doing}: {message}"
    return _EXCEPTIONS[answer](message)


def output_error(error: BaseException, *, job_id: str) -> AirflowException:
    """The exception for a job's output that could not be fetched or stored.

    A refused output (host, size, file name) fails the task for good; any other failure fails the
    try, and a retry fetches the output again.
    """
    final = answer_for(error, downloading=True) is not Answer.RETRY
    doing = (
        f"Not storing the image of Doitong job {job_id}"
        if final
        else f"Downloading the image of Doitong job {job_id} failed"
    )
    return airflow_error(error, doing=doing, downloading=True)
