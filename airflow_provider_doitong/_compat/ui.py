"""The UI: the connection form on Airflow 3.0 and 3.1, and what the plugin's pages need.

The connection form: 3.2 and later read its extra fields from the declarative ``conn-fields`` of
``get_provider_info()``; 3.0 and 3.1 only from a hook's ``get_connection_form_widgets()``, which
:func:`connection_form_widgets` builds from the same declaration.

The UI plugin (:mod:`airflow_provider_doitong.ui`): every release mounts a plugin's FastAPI app
(``fastapi_apps``, from the ``airflow.plugins`` entry point) and authenticates its routes only if
the plugin asks, which it does with the release's own ``get_user`` and the auth manager's
``is_authorized_dag``. A link opened in the browser carries only cookies. The UI keeps its login
token in the HttpOnly ``_token`` cookie, which ``get_user`` reads, from the release that moved it
there (after 3.1.0; 3.3 is what the browser test runs); 3.0's UI, and 3.1.0's, keep it in the
browser's local storage, so there the pages answer 401 to a browser (a request with an
``Authorization: Bearer`` token still works). The task instance tab (``external_views``) arrived
in 3.1; 3.0 ignores it. Teams (``DagDetails.team_name``) arrived in 3.1; :func:`dag_details` sets
it where the release has it.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import conf


def connection_form_widgets(conn_fields: dict[str, Any]) -> dict[str, Any]:
    """The connection form's extra fields as WTForms fields, for Airflow 3.0 and 3.1.

    ``conn_fields`` is the ``conn-fields`` declaration of ``get_provider_info()``, which 3.2 and
    later read instead (they never call a hook's ``get_connection_form_widgets()`` when it exists).
    3.0 and 3.1's UI stands in mocks for the imports below, so neither FAB nor WTForms needs to be
    installed, and knows four field classes: a choice is a text field with ``any_of``, a number a
    text field (the hook parses it), a secret a password field.
    """
    # FAB and WTForms: 3.1's UI stands in mocks where they are missing; 3.0's needs them installed.
    from flask_appbuilder.fieldwidgets import (  # type: ignore[import-not-found,import-untyped,unused-ignore]
        BS3PasswordFieldWidget,
        BS3TextFieldWidget,
    )
    from flask_babel import lazy_gettext  # type: ignore[import-not-found,import-untyped,unused-ignore]
    from wtforms import PasswordField, StringField  # type: ignore[import-not-found,import-untyped,unused-ignore]
    from wtforms.validators import Optional, any_of  # type: ignore[import-not-found,import-untyped,unused-ignore]

    widgets = {}
    for name, field in conn_fields.items():
        schema = field["schema"]
        validators: list[Any] = [Optional()]
        if "enum" in schema:
            validators.append(any_of([value for value in schema["enum"] if value is not None]))
        secret = schema.get("format") == "password"
        default = schema.get("default")
        if isinstance(default, int | float):
            default = f"{default:g}"  # a number is typed as text in these releases' form
        widgets[name] = (PasswordField if secret else StringField)(
            lazy_gettext(field["label"]),
            widget=BS3PasswordFieldWidget() if secret else BS3TextFieldWidget(),
            validators=validators,
            description=field["description"],
            default=default,
        )
    return widgets


def api_base_url() -> str:
    """``[api] base_url`` without its trailing ``/``, or ``""`` (links then stay on the UI's own origin)."""
    return str(conf.get("api", "base_url", fallback="") or "").rstrip("/")


def dag_details(dag_id: str) -> Any:
    """The auth manager's ``DagDetails`` of a DAG, with its team where the release has teams (3.1+).

    Imported from the api-server: call it there only.
    """
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
    from airflow.models.dag import DagModel

    get_team_name = getattr(DagModel, "get_team_name", None)
    if get_team_name is None:
        return DagDetails(id=dag_id)
    return DagDetails(id=dag_id, team_name=get_team_name(dag_id))
