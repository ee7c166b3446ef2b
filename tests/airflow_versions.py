"""Where the tests meet Airflow internals that moved between 3.0 and 3.3.

The provider's own version differences live in ``airflow_provider_doitong._compat``; this is the
tests' counterpart, for the parts of Airflow only a test harness touches.
"""

from __future__ import annotations

from types import ModuleType


def dagbag_module() -> ModuleType:
    """The module with ``DagBag``, and with ``sync_bag_to_db`` from 3.1 on.

    ``airflow.dag_processing.dagbag`` from 3.2, ``airflow.models.dagbag`` before.
    """
    try:
        from airflow.dag_processing import dagbag
    except ImportError:
        from airflow.models import dagbag
    return dagbag


def sync_dag_to_db(bag: object) -> None:
    """Write a ``DagBag``'s DAGs to the metadata database, as the DAG processor would.

    3.1 and later need it before ``dag.test()``; 3.0's ``dag.test()`` serializes the DAG itself.
    """
    dagbag = dagbag_module()
    if hasattr(dagbag, "sync_bag_to_db"):
        dagbag.sync_bag_to_db(bag, "dags-folder", None)
