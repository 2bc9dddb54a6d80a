"""The warm pools (admins): each pooled template's size, and its workspaces ready or filling."""

from __future__ import annotations

from fastapi import APIRouter

from vmhost.core import paging
from vmhost.daemon.deps import CallerDep, OrchestratorDep
from vmhost.daemon.routes.common import API, CursorQuery, LimitQuery, errors
from vmhost.daemon.schemas import Page, PoolOut

router = APIRouter(tags=["pools"])

POOL_ORDER = paging.Order("pools", {"template": str})


@router.get(f"{API}/pools", response_model=Page[PoolOut], summary="List the warm pools", responses=errors(403))
def list_pools(caller: CallerDep, orchestrator: OrchestratorDep, limit: LimitQuery = paging.DEFAULT_LIMIT,
               cursor: CursorQuery = None) -> Page[PoolOut]:
    """Admins only. One entry per template with a `pool_size`, by template name: how many workspaces its
    pool keeps ready, how many are ready now, filling (being created and provisioned) and failed (a
    create that failed, replaced after a minute). A create of such a template claims a ready one when it
    asks for nothing the template does not give (resources, environment)."""
    page = POOL_ORDER.page_of(orchestrator.pool_status(caller), limit, cursor, key=lambda p: (p.template,))
    return Page[PoolOut].of(page, PoolOut.model_validate)
