"""TaskFlow decorators: ``@task.doitong`` and ``@task.doitong_batch`` (see :mod:`.doitong`)."""

from __future__ import annotations

from airflow_provider_doitong.decorators.doitong import doitong_batch_task, doitong_task

__all__ = ["doitong_batch_task", "doitong_task"]
