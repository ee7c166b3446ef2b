"""The simple auth manager with one per-DAG rule, for the browser test's real Airflow.

The simple auth manager knows roles, not DAGs: every viewer reads every DAG. Real deployments
decide per DAG in their auth manager's ``is_authorized_dag`` (FAB's per-DAG permissions, Keycloak's
resources); this one does the same for the users in :data:`DENIED`, so the test can show that a
user without access to a DAG gets none of its images, through the api-server's own auth path.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

#: user name -> DAG ids that user may not see at all.
DENIED = {"outsider": {"doitong_ui_batch"}}


class PerDagAuthManager(SimpleAuthManager):
    """``SimpleAuthManager``, except that the users of :data:`DENIED` may not access those DAGs."""

    def is_authorized_dag(
        self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None
    ) -> bool:
        dag_id = getattr(details, "id", None)
        denied = DENIED.get(user.get_name(), set())
        if dag_id is None and denied:
            return False  # "every DAG" includes the denied ones
        if dag_id in denied:
            return False
        return super().is_authorized_dag(
            method=method, user=user, access_entity=access_entity, details=details
        )
