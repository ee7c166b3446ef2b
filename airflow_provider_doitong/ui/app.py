"""The plugin's FastAPI app: a task instance's contact sheet, manifest and images, for users allowed
to read that DAG's task instances.

Every route takes the task instance (``dag_id``, ``run_id``, ``task_id``, ``map_index``) as query
parameters and authenticates with the api-server's own ``get_user`` (the UI's ``_token`` cookie
or an ``Authorization: Bearer`` token), then asks the auth manager ``is_authorized_dag`` (``GET``
on the DAG's task instances). The api-server mounts the app without authenticating it: these
checks are the only ones. What is read is found by :mod:`.locate`, from the task instance's
rendered ``output_path`` in Airflow's database; nothing in a request is a path.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from airflow_provider_doitong._compat import api_base_url, dag_details
from airflow_provider_doitong.ui import locate, sheet

#: Task instance states in which a batch may still change.
UNFINISHED = frozenset({"scheduled", "queued", "running", "deferred", "up_for_retry", "restarting"})
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    "Referrer-Policy": "same-origin",
}


class TaskInstanceRef:
    """The task instance a request asks about, once its user may read that DAG's task instances."""

    def __init__(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index = dag_id, run_id, task_id, map_index

    def owner(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "task_id": self.task_id,
            "map_index": self.map_index,
        }


def _ti_row(ti: TaskInstanceRef) -> tuple[str | None, Any, Any]:
    """The task instance's state, rendered ``output_path`` and XCom return value (404 if there is no such one)."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    def where(model: Any) -> list[Any]:
        return [
            model.dag_id == ti.dag_id,
            model.run_id == ti.run_id,
            model.task_id == ti.task_id,
            model.map_index == ti.map_index,
        ]

    with create_session() as session:
        state = session.execute(select(TaskInstance.state).where(*where(TaskInstance))).first()
        if state is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "No such task instance")
        fields = session.scalar(select(RTIF.rendered_fields).where(*where(RTIF)))
        row = session.execute(
            select(XComModel.value).where(*where(XComModel), XComModel.key == "return_value")
        ).first()
    result = XComModel.deserialize_value(row) if row is not None else None
    output_path = fields.get("output_path") if isinstance(fields, dict) else None
    return (None if state[0] is None else str(getattr(state[0], "value", state[0]))), output_path, result


def _batch(ti: TaskInstanceRef, *, recent: bool = False) -> tuple[locate.BatchDoc, str | None]:
    state, output_path, _ = _ti_row(ti)
    find = locate.recent_batch_doc if recent else locate.batch_doc
    try:
        return find(output_path, ti.owner()), state
    except locate.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


def _image_response(path: Any, name: str) -> Response:
    try:
        data, kind = locate.read_image(path)
    except locate.NotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    headers = {
        **_HEADERS,
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}",
    }
    return Response(content=data, media_type=kind.media_type, headers=headers)


def authorization() -> Any:
    """A dependency: the request's task instance, once its user may read that DAG's task instances.

    Imported in the api-server only: the user comes from the release's own ``get_user`` (401 without
    a valid token), the decision from the auth manager (403 when it says no).
    """
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import get_user

    async def authorized_ti(
        dag_id: Annotated[str, Query(min_length=1, max_length=250)],
        run_id: Annotated[str, Query(min_length=1, max_length=250)],
        task_id: Annotated[str, Query(min_length=1, max_length=250)],
        map_index: Annotated[str, Query(max_length=12)] = "-1",
        user: Any = Depends(get_user),  # noqa: B008 - a default: annotations resolve in module scope only
    ) -> TaskInstanceRef:
        allowed = get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.TASK_INSTANCE, details=dag_details(dag_id), user=user
        )
        if not allowed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
        # the UI's tab leaves "{MAP_INDEX}" as it is for a task instance that is not mapped
        index = int(map_index) if map_index.lstrip("-").isdigit() else -1
        return TaskInstanceRef(dag_id, run_id, task_id, max(index, -1))

    return authorized_ti


def _page(html: str, status_code: int = status.HTTP_200_OK) -> HTMLResponse:
    """An HTML page, under the contact sheet's Content-Security-Policy."""
    return HTMLResponse(
        html, status_code=status_code, headers={**_HEADERS, "Content-Security-Policy": sheet.CSP}
    )


async def _error_response(request: Request, exc: HTTPException) -> Response:
    """The app's answer to an :class:`HTTPException`.

    On the contact sheet's page (the UI's tab), a 401 redirects to the api-server's login and back,
    and a 404 is a page saying what is missing; everything else is JSON.
    """
    page = request.url.path.rstrip("/").endswith("/batch")
    if exc.status_code == status.HTTP_401_UNAUTHORIZED and page:
        target = f"{request.url.path}?{request.url.query}"
        login = f"{urlsplit(api_base_url()).path.rstrip('/')}/api/v2/auth/login"
        return RedirectResponse(f"{login}?{urlencode({'next': target})}", headers=_HEADERS)
    if page and exc.status_code == status.HTTP_404_NOT_FOUND:  # shown in the UI's tab
        return _page(sheet.message(str(exc.detail)), status_code=exc.status_code)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=_HEADERS)


def _contact_sheet(ti: TaskInstanceRef) -> Response:
    """A batch's contact sheet: from its manifest, or while it runs from its progress snapshot.

    A ``FluxGenerateOperator``'s task instance gets a page with its one image; an unfinished task
    instance whose first progress snapshot is not stored yet, a page that refreshes until it is.
    """
    state, output_path, result = _ti_row(ti)
    try:
        batch = locate.batch_doc(output_path, ti.owner())
    except locate.NotFound as exc:
        try:  # a FluxGenerateOperator's task instance: its one image
            locate.single_image(output_path, result)
        except locate.NotFound:
            if output_path and state in UNFINISHED:  # its first progress snapshot is on its way
                text = f"the task is {state}; its images appear here as they are stored"
                return _page(sheet.message(text, refresh=True))
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        return _page(sheet.single(result, query=ti.owner(), state=state))
    live = batch.live and (state in UNFINISHED)
    return _page(sheet.render(batch.doc, query=ti.owner(), live=live, state=state))


def create_app() -> FastAPI:
    """The app the plugin registers under :data:`~airflow_provider_doitong.ui.URL_PREFIX`."""
    app = FastAPI(title="Doitong images", docs_url=None, redoc_url=None, openapi_url=None)
    authorized = Depends(authorization())  # route signatures' annotations resolve in module scope only
    app.exception_handler(HTTPException)(_error_response)

    @app.get("/batch", response_class=HTMLResponse)
    def contact_sheet(ti: TaskInstanceRef = authorized) -> Response:
        """A batch's contact sheet: from its manifest, or while it runs from its progress snapshot."""
        return _contact_sheet(ti)

    @app.get("/batch/manifest.json")
    def manifest_json(ti: TaskInstanceRef = authorized) -> Response:
        """The batch's manifest (or, before it is written, its progress snapshot)."""
        batch, _ = _batch(ti)
        return JSONResponse(batch.doc, headers=_HEADERS)

    @app.get("/batch/file")
    def batch_file(
        name: Annotated[str, Query(min_length=1, max_length=255)], ti: TaskInstanceRef = authorized
    ) -> Response:
        """One image the batch's manifest lists as stored."""
        batch, _ = _batch(ti, recent=True)
        try:
            path = locate.listed_file(batch, name)
        except locate.NotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        return _image_response(path, name)

    @app.get("/image")
    def single_image(ti: TaskInstanceRef = authorized) -> Response:
        """The image a ``FluxGenerateOperator`` task instance stored."""
        _, output_path, result = _ti_row(ti)
        try:
            path = locate.single_image(output_path, result)
        except locate.NotFound as exc:
            raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
        return _image_response(path, path.name)

    return app


class LazyApp:
    """The ASGI app the plugin registers: builds :func:`create_app` on its first request.

    Airflow imports plugins in every component (the scheduler, workers); only the api-server serves
    this app, so only there are the api-server's modules imported.
    """

    def __init__(self) -> None:
        self._app: FastAPI | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = create_app()
        await self._app(scope, receive, send)
