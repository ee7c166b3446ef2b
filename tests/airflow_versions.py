"""Where the tests meet Airflow internals that moved between 3.0 and 3.3.

The provider's own version differences live in ``airflow_provider_doitong._compat``; this is the
tests' counterpart, for the parts of Airflow only a test harness touches.
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import ModuleType

import airflow
from packaging.version import Version

#: The installed Airflow's ``(major, minor)``.
AIRFLOW_VERSION: tuple[int, ...] = Version(airflow.__version__).release[:2]
#: From 3.2 the providers manager builds the connection form from ``get_provider_info()``'s
#: ``conn-fields``; before, only the UI builds it, from the hook's ``get_connection_form_widgets()``.
DECLARATIVE_CONNECTION_FORM = AIRFLOW_VERSION >= (3, 2)


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

    ``dag.test()`` needs it from 3.1 on; on 3.0 it registers the DAGs' assets, so that an outlet is
    active. 3.0 wants each DAG's path relative to its bundle, which only parsing a file sets.
    """
    dagbag = dagbag_module()
    if hasattr(dagbag, "sync_bag_to_db"):
        dagbag.sync_bag_to_db(bag, "dags-folder", None)
        return
    for dag in bag.dags.values():  # type: ignore[attr-defined]
        dag.relative_fileloc = Path(dag.fileloc).name
    bag.sync_to_db("dags-folder", None)  # type: ignore[attr-defined]


def without_mask_requests(output: str) -> str:
    """Captured ``dag.test()`` output without the in-process supervisor's echo of mask requests.

    ``dag.test()`` hands each message of a task to an in-process supervisor that logs it at debug
    level; on Airflow 3.0 that reaches the console, including ``MaskSecret(value=...)``, the request
    to mask a secret (Airflow's own, for every connection password, and the provider's). The real
    supervisor omits that message's body.
    """
    return "\n".join(
        line
        for line in output.splitlines()
        if not ("Sending request" in line and "type='MaskSecret'" in line)
    )


def share_the_in_process_execution_api() -> None:
    """Build ``dag.test()``'s in-process execution API once per process, as Airflow 3.3 does.

    Before 3.3 every task that ``dag.test()`` runs builds a new one, and building it (cadwyn making
    each API version's routes) costs seconds of CPU: most of a compatibility run's time. 3.3 caches
    ``in_process_api_server()`` with ``functools.lru_cache``; this does the same on older releases.
    """
    from airflow.sdk.execution_time import supervisor

    if not hasattr(supervisor.in_process_api_server, "cache_info"):
        supervisor.in_process_api_server = functools.lru_cache(maxsize=1)(supervisor.in_process_api_server)


def unwrapped(text: str) -> str:
    """``text`` without its white space: Airflow 3.0 prints a task's exception wrapped at 80 columns."""
    return "".join(text.split())
