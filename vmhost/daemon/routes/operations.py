from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query, Request

from vmhost.core import paging
from vmhost.core.models import OperationStatus
from vmhost.core.sessions import SessionKind
from vmhost.daemon.deps import CallerDep, EventsDep, OrchestratorDep, in_read_pool
from vmhost.daemon.routes.common import API, CursorQuery, LimitQuery, errors
from vmhost.daemon.schemas import OperationOut, Page
from vmhost.daemon.sessions import hold

router = APIRouter(prefix=f"{API}/operations", tags=["operations"])

MAX_WAIT = 300


@router.get("", response_model=Page[OperationOut], summary="List operations", responses=errors(404))
async def list_operations(request: Request, caller: CallerDep, orchestrator: OrchestratorDep,
                          workspace_id: Annotated[str | None, Query(description="workspace id or name")] = None,
                          type: str | None = None, status: OperationStatus | None = None,
                          limit: LimitQuery = paging.DEFAULT_LIMIT,
                          cursor: CursorQuery = None) -> Page[OperationOut]:
    """The caller's operations, newest first (everyone's for admins). History outlives workspaces."""
    def read() -> Page[OperationOut]:
        found = orchestrator.list_operations(caller, workspace=workspace_id, type=type,
                                             status=status.value if status else None, limit=limit, cursor=cursor)
        return Page[OperationOut].of(found, OperationOut.model_validate)

    return await in_read_pool(request, read)


@router.get("/{operation_id}", response_model=OperationOut, summary="Get an operation", responses=errors(404))
async def get_operation(operation_id: str, request: Request, caller: CallerDep,
                        orchestrator: OrchestratorDep) -> OperationOut:
    return await in_read_pool(request, lambda: OperationOut.model_validate(orchestrator.get_operation(caller,
                                                                                                     operation_id)))


@router.get("/{operation_id}/wait", response_model=OperationOut, summary="Wait for an operation to end",
            responses=errors(404, 429))
async def wait_operation(operation_id: str, request: Request, caller: CallerDep, orchestrator: OrchestratorDep,
                         events: EventsDep, timeout: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 30) -> OperationOut:
    """Blocks until the operation has succeeded or failed, or `timeout` seconds pass; answers with the
    operation either way (check its `status`). Each user may hold `user_max_waits` waits at once (429
    with `Retry-After` past that); a wait ends early when its client goes away."""
    hold(request, caller, SessionKind.WAIT)
    operation = await anyio.to_thread.run_sync(orchestrator.get_operation, caller, operation_id)
    operation = await events.wait_operation(operation, timeout, gone=request.is_disconnected)
    return OperationOut.model_validate(operation)


@router.delete("/{operation_id}", response_model=OperationOut, summary="Cancel an operation",
               responses=errors(403, 404, 409))
def cancel_operation(operation_id: str, caller: CallerDep, orchestrator: OrchestratorDep) -> OperationOut:
    """A pending operation fails at once with 'cancelled by USER'; a running `exec` has its command
    killed, and a running `create` or `rebuild` its provisioning (the answer comes once it has ended).
    409 for one that has ended, or that is running and cannot be stopped half-way (to get rid of its
    workspace anyway: `DELETE /workspaces/{id}?force=true`)."""
    return OperationOut.model_validate(orchestrator.cancel_operation(caller, operation_id))
