"""Who the daemon thinks the caller is."""

from __future__ import annotations

from fastapi import APIRouter, Request

from vmhost.daemon.deps import CallerDep, OrchestratorDep, in_read_pool
from vmhost.daemon.routes.common import API, errors
from vmhost.daemon.routes.quotas import quota_out
from vmhost.daemon.schemas import Me

router = APIRouter(prefix=API, tags=["identity"])


@router.get("/me", response_model=Me, summary="Who am I?", responses=errors(), name="get_me")
async def me(request: Request, caller: CallerDep, orchestrator: OrchestratorDep) -> Me:
    """The caller's identity, role, door, scope, and quota use (admins have no quota: `exempt`)."""
    quota = await in_read_pool(request,
                               lambda: orchestrator.quotas.quota(caller.user, exempt=caller.exempt_from_quotas))
    return Me(user=caller.user, role="admin" if caller.admin else "user", door=caller.door, scope=caller.scope,
              address=caller.address, email=caller.email, token_id=caller.token_id, quota=quota_out(quota))
