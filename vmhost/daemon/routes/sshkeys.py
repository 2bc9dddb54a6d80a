"""SSH public keys, for logging in to workspaces over SSH (vmhost.daemon.ssh)."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Query, Request

from vmhost.daemon.deps import CallerDep, OrchestratorDep, in_read_pool
from vmhost.daemon.routes.common import API, errors
from vmhost.daemon.schemas import Page, SshKeyCreate, SshKeyOut

router = APIRouter(prefix=f"{API}/ssh-keys", tags=["ssh-keys"])


@router.get("", response_model=Page[SshKeyOut], summary="List SSH keys", responses=errors(403))
async def list_ssh_keys(request: Request, caller: CallerDep, orchestrator: OrchestratorDep,
                        user: Annotated[str | None, Query(max_length=128, description="another user's keys, "
                                                          "or * for everyone's (admins only)")] = None,
                        ) -> Page[SshKeyOut]:
    """The caller's SSH keys, oldest first (an admin: `user`'s)."""
    keys = await in_read_pool(request, lambda: orchestrator.ssh_keys.list(caller, user))
    return Page[SshKeyOut](items=[SshKeyOut.model_validate(k) for k in keys], next_cursor=None)


@router.post("", status_code=201, response_model=SshKeyOut, summary="Add an SSH key", responses=errors(403, 409))
async def add_ssh_key(body: SshKeyCreate, caller: CallerDep, orchestrator: OrchestratorDep) -> SshKeyOut:
    """Register a public key for SSH logins; a key belongs to one user (409 when it is registered already).
    Only admins add keys for other users, or admin keys."""
    key = await anyio.to_thread.run_sync(orchestrator.ssh_keys.add, caller, body.public_key, body.user, body.admin)
    return SshKeyOut.model_validate(key)


@router.delete("/{key_id}", response_model=SshKeyOut, summary="Remove an SSH key", responses=errors(403, 404))
async def remove_ssh_key(key_id: str, caller: CallerDep, orchestrator: OrchestratorDep) -> SshKeyOut:
    """The key stops working at once: it is looked up at every login."""
    return SshKeyOut.model_validate(await anyio.to_thread.run_sync(orchestrator.ssh_keys.remove, caller, key_id))
