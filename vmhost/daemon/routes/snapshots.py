from __future__ import annotations

from fastapi import APIRouter, Request, Response

from vmhost.core import paging
from vmhost.daemon.deps import CallerDep, OrchestratorDep, in_read_pool
from vmhost.daemon.routes.common import API, CursorQuery, LimitQuery, errors, locate_operation
from vmhost.daemon.schemas import (
    OperationOut,
    Page,
    SnapshotAccepted,
    SnapshotCreate,
    SnapshotOut,
    SnapshotRestore,
    WorkspaceAccepted,
    WorkspaceOut,
)

router = APIRouter(prefix=f"{API}/workspaces/{{ref}}/snapshots", tags=["snapshots"])


@router.get("", response_model=Page[SnapshotOut], summary="List a workspace's snapshots", responses=errors(404))
async def list_snapshots(ref: str, request: Request, caller: CallerDep, orchestrator: OrchestratorDep,
                         limit: LimitQuery = paging.DEFAULT_LIMIT, cursor: CursorQuery = None) -> Page[SnapshotOut]:
    """Oldest first, with their sizes; `creating` ones are still being taken."""
    return await in_read_pool(request, lambda: Page[SnapshotOut].of(orchestrator.snapshots.list(caller, ref, limit,
                                                                                                cursor),
                                                                    SnapshotOut.model_validate))


@router.post("", status_code=202, response_model=SnapshotAccepted, summary="Take a snapshot",
             responses=errors(403, 404, 409, 503))
def create_snapshot(ref: str, body: SnapshotCreate, response: Response, caller: CallerDep,
                    orchestrator: OrchestratorDep) -> SnapshotAccepted:
    """Queue a snapshot of the container's filesystem and of the /workspace volume. Answers at once with
    the snapshot (status `creating`) and its operation; follow the `Location` header to watch it."""
    snapshot, operation = orchestrator.snapshots.create(caller, ref, body.name)
    locate_operation(response, operation.id)
    return SnapshotAccepted(snapshot=SnapshotOut.model_validate(snapshot),
                            operation=OperationOut.model_validate(operation))


@router.get("/{snapshot}", response_model=SnapshotOut, summary="Get a snapshot", responses=errors(404))
async def get_snapshot(ref: str, snapshot: str, request: Request, caller: CallerDep,
                       orchestrator: OrchestratorDep) -> SnapshotOut:
    """A snapshot by id or by name."""
    return await in_read_pool(request, lambda: SnapshotOut.model_validate(orchestrator.snapshots.get(caller, ref,
                                                                                                     snapshot)))


@router.delete("/{snapshot}", response_model=SnapshotOut, summary="Delete a snapshot",
               responses=errors(403, 404, 409, 502, 503))
def delete_snapshot(ref: str, snapshot: str, caller: CallerDep, orchestrator: OrchestratorDep) -> SnapshotOut:
    """Removes the snapshot's image and volume archive at once; answers with what was deleted. Refused
    (409) while an operation takes it or restores from it."""
    return SnapshotOut.model_validate(orchestrator.snapshots.delete(caller, ref, snapshot))


@router.post("/{snapshot}/restore", status_code=202, response_model=WorkspaceAccepted,
             summary="Restore a snapshot, in place or as a new workspace", responses=errors(403, 404, 409, 503))
def restore_snapshot(ref: str, snapshot: str, response: Response, caller: CallerDep, orchestrator: OrchestratorDep,
                     body: SnapshotRestore | None = None) -> WorkspaceAccepted:
    """In place, the container is replaced by one from the snapshot's image and /workspace is refilled
    from its archive: files added since are gone, files deleted since come back. With `as_new`, a new
    workspace of the caller's, with the same settings, is made from it and the original is left alone.
    Answers with the workspace restored into and the operation doing it."""
    workspace, operation = orchestrator.snapshots.restore(caller, ref, snapshot, body.as_new if body else None)
    locate_operation(response, operation.id)
    return WorkspaceAccepted(workspace=WorkspaceOut.of(workspace), operation=OperationOut.model_validate(operation))
