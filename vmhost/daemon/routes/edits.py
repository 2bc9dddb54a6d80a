"""Changing a workspace's metadata: PATCH for name, expiry, labels, plugins and idle timeout; extend for
the expiry."""

from __future__ import annotations

from fastapi import APIRouter

from vmhost.core.edits import edit_workspace, extend_workspace
from vmhost.daemon.deps import CallerDep, OrchestratorDep
from vmhost.daemon.routes.common import API, errors
from vmhost.daemon.schemas import WorkspaceEdit, WorkspaceExtend, WorkspaceOut

router = APIRouter(prefix=f"{API}/workspaces", tags=["workspaces"])


@router.patch("/{ref}", response_model=WorkspaceOut,
              summary="Edit a workspace's name, expiry, labels, plugins or idle timeout",
              responses=errors(403, 404, 409), name="edit_workspace")
def edit(ref: str, body: WorkspaceEdit, caller: CallerDep, orchestrator: OrchestratorDep) -> WorkspaceOut:
    """Only the fields given change, at once (no operation): `name` (409 when the owner has one of that
    name), `ttl_seconds` (the expiry becomes now + ttl; `null` removes it), `labels` (added or
    overwritten) and `remove_labels` (keys deleted), `plugins` (replaced), `idle_timeout_seconds` (stop
    the running workspace after that long without activity; `0` or `null`: never; above the caller's
    quota: 403). Example: `{"labels": {"team": "infra"}, "remove_labels": ["old"], "ttl_seconds": 7200}`."""
    return WorkspaceOut.of(edit_workspace(orchestrator, caller, ref, body.model_dump(exclude_unset=True)))


@router.post("/{ref}/extend", response_model=WorkspaceOut, summary="Push a workspace's expiry further out",
             responses=errors(403, 404, 409), name="extend_workspace")
def extend(ref: str, body: WorkspaceExtend, caller: CallerDep, orchestrator: OrchestratorDep) -> WorkspaceOut:
    """The expiry moves `seconds` later (counted from now when it has already passed); it never gets
    earlier. A workspace without expiry keeps none and is answered unchanged (`expires_at: null`)."""
    return WorkspaceOut.of(extend_workspace(orchestrator, caller, ref, body.seconds))
