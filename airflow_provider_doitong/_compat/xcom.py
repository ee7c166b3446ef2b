"""Reading the result of the same task's latest earlier run (its ``return_value`` XCom).

Every supported release (3.0 to 3.4) has ``ti.xcom_pull(..., include_prior_dates=True)`` in the Task
SDK: the newest value of the task's ``return_value`` among the runs whose logical date (or, for a
run without one, its ``run_after``) is not after this run's. The map index is always given: a pull
without one reads every map index's values (a list of every earlier run's, with
``include_prior_dates``), and on some 3.0 releases (3.0.3 and 3.0.4 were reported) that path
ignored ``include_prior_dates`` altogether. This run's own value is not among them: a task
instance's XComs are cleared when a try starts (not when it resumes). Tested on 3.3 only.
"""

from __future__ import annotations

from typing import Any


def earlier_result(context: Any) -> Any:
    """The ``return_value`` of this task instance (same DAG, task and map index) in the latest
    earlier run that has one (a successful one), or ``None``. Untrusted: check it before use.
    """
    ti = context["ti"]
    return ti.xcom_pull(
        task_ids=ti.task_id,
        key="return_value",
        include_prior_dates=True,
        map_indexes=ti.map_index,
        default=None,
    )
