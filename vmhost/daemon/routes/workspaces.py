from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import Field, TypeAdapter, ValidationError

from vmhost.core import paging
from vmhost.core.orchestrator import WorkspaceRequest
from vmhost.daemon.deps import CallerDep, OrchestratorDep, get_caller, in_read_pool
from vmhost.daemon.routes.common import API, CURSOR_DESCRIPTION, LIMIT_DESCRIPTION, errors, locate_operation
from vmhost.daemon.schemas import OperationOut, Page, WorkspaceAccepted, WorkspaceCreate, WorkspaceOut
from vmhost.daemon.services import services_of
from vmhost.errors import InvalidInput

router = APIRouter(prefix=f"{API}/workspaces", tags=["workspaces"])

WorkspacePage = Page[WorkspaceOut]
WORKSPACE_PAGE = TypeAdapter(WorkspacePage)
LIMIT = TypeAdapter(Annotated[int, Field(ge=1, le=paging.MAX_LIMIT)])

Action = Literal["start", "stop", "restart", "rebuild"]


def parse_limit(value: str | None) -> int:
    """The `limit` query parameter, checked as FastAPI checks the other routes' (the same 422)."""
    if value is None:
        return paging.DEFAULT_LIMIT
    try:
        return LIMIT.validate_strings(value)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("query", "limit")} for error in exc.errors()]) from None


def parse_label_filters(values: list[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, sep, wanted = value.partition("=")
        if not sep or not key:
            raise InvalidInput(f"label filter {value!r} must look like key=value")
        labels[key] = wanted
    return labels


@router.post("", status_code=202, response_model=WorkspaceAccepted, summary="Create a workspace",
             responses=errors(403, 409, 503))
def create_workspace(body: WorkspaceCreate, response: Response, caller: CallerDep,
                     orchestrator: OrchestratorDep) -> WorkspaceAccepted:
    """Queue the creation of a workspace from a template. Answers at once with the workspace (status
    `pending`) and the operation that builds it; follow the `Location` header to watch it."""
    workspace, operation = orchestrator.create(caller, WorkspaceRequest(**body.model_dump()))
    locate_operation(response, operation.id)
    return WorkspaceAccepted(workspace=WorkspaceOut.of(workspace), operation=OperationOut.model_validate(operation))


# The busiest route reads its caller and its query itself rather than through Depends() and Query():
# FastAPI's solving of those cost more than the rest of a cached answer (see README, Performance). The
# query is declared here for the API's description, as FastAPI would have written it.
LIST_QUERY = [
    {"name": "status", "in": "query", "required": False,
     "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "only this status",
                "title": "Status"},
     "description": "only this status"},
    {"name": "label", "in": "query", "required": False,
     "schema": {"type": "array", "items": {"type": "string"}, "description": "key=value; repeat to require several",
                "default": [], "title": "Label"},
     "description": "key=value; repeat to require several"},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "maximum": paging.MAX_LIMIT, "minimum": 1, "description": LIMIT_DESCRIPTION,
                "default": paging.DEFAULT_LIMIT, "title": "Limit"},
     "description": LIMIT_DESCRIPTION},
    {"name": "cursor", "in": "query", "required": False,
     "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": CURSOR_DESCRIPTION,
                "title": "Cursor"},
     "description": CURSOR_DESCRIPTION},
]


@router.get("", response_model=WorkspacePage, summary="List workspaces", responses=errors(),
            openapi_extra={"parameters": LIST_QUERY})
async def list_workspaces(request: Request) -> Response:
    """The caller's workspaces (every workspace for admins), oldest first."""
    caller = await get_caller(request)
    services = services_of(request)
    orchestrator = services.orchestrator
    query = request.query_params
    status, cursor = query.get("status"), query.get("cursor")
    labels = parse_label_filters(query.getlist("label"))
    limit = parse_limit(query.get("limit"))

    def build() -> bytes:
        page = orchestrator.list(caller, status, labels, limit, cursor)
        return WORKSPACE_PAGE.dump_json(WorkspacePage.of(page, WorkspaceOut.of))

    # served pre-serialised, reused until a workspace changes (see daemon/listcache.py); a reused answer
    # needs no thread, a new one is built in the read pool
    key = ("workspaces", caller.user, caller.admin, status, tuple(sorted(labels.items())), limit, cursor)
    body = await services.workspace_lists.answer(key, build, services.read_limiter)
    return Response(body, media_type="application/json")


@router.get("/{ref}", response_model=WorkspaceOut, summary="Get a workspace", responses=errors(404))
async def get_workspace(ref: str, request: Request, caller: CallerDep, orchestrator: OrchestratorDep) -> WorkspaceOut:
    """A workspace by id or by the caller's name for it, with connection info."""
    return await in_read_pool(request, lambda: WorkspaceOut.of(orchestrator.get(caller, ref)))


def _act(ref: str, action: str, response: Response, caller: CallerDep, orchestrator: OrchestratorDep) -> OperationOut:
    operation = getattr(orchestrator, action)(caller, ref)
    locate_operation(response, operation.id)
    return OperationOut.model_validate(operation)


@router.post("/{ref}/actions/{action}", status_code=202, response_model=OperationOut,
             summary="Start, stop, restart or rebuild a workspace", responses=errors(403, 404, 409),
             name="run_workspace_action")
def act(ref: str, action: Action, response: Response, caller: CallerDep,
        orchestrator: OrchestratorDep) -> OperationOut:
    """Queue a lifecycle action; answers with its operation and a `Location` header pointing at it.
    `rebuild` replaces the container with a fresh one from the template's current image (the workspace's
    own image when the template is gone) with the same settings, keeps the `/workspace` volume, and runs
    the provision commands again: files outside `/workspace` are gone afterwards."""
    return _act(ref, action, response, caller, orchestrator)


# kept for scripts written against the short form; documented once, as /actions/{action}
@router.post("/{ref}/{action}", status_code=202, response_model=OperationOut, include_in_schema=False)
def act_short(ref: str, action: Action, response: Response, caller: CallerDep,
              orchestrator: OrchestratorDep) -> OperationOut:
    return _act(ref, action, response, caller, orchestrator)


@router.delete("/{ref}", status_code=202, response_model=OperationOut, summary="Delete a workspace",
               responses=errors(403, 404, 409))
def delete_workspace(ref: str, response: Response, caller: CallerDep, orchestrator: OrchestratorDep,
                     force: Annotated[bool, Query(description="first cancel every operation in flight on the "
                                                              "workspace (they fail 'cancelled by forced delete')")]
                     = False) -> OperationOut:
    """Queue the removal of the workspace's container, its volumes and its snapshots. Without `force`,
    an operation in flight makes this a 409; with it, the workspace goes whatever state it is in."""
    operation = orchestrator.delete(caller, ref, force=force)
    locate_operation(response, operation.id)
    return OperationOut.model_validate(operation)
