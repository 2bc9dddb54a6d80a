from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Request

from vmhost.core import paging
from vmhost.daemon.deps import CallerDep, OrchestratorDep, TokenSessionsDep, in_read_pool
from vmhost.daemon.routes.common import API, CursorQuery, LimitQuery, errors
from vmhost.daemon.schemas import Page, TokenCreate, TokenCreated, TokenOut

router = APIRouter(prefix=f"{API}/tokens", tags=["tokens"])


@router.post("", status_code=201, response_model=TokenCreated, summary="Create an API token", responses=errors(403))
def create_token(body: TokenCreate, caller: CallerDep, orchestrator: OrchestratorDep) -> TokenCreated:
    """A bearer token for TCP callers. Its secret is shown only in this answer; only its hash is kept.
    Only admins create tokens for other users or admin tokens."""
    token, secret = orchestrator.create_token(caller, user=body.user, name=body.name, scope=body.scope,
                                              admin=body.admin, ttl_seconds=body.ttl_seconds)
    return TokenCreated(token=TokenOut.model_validate(token), secret=secret)


@router.get("", response_model=Page[TokenOut], summary="List API tokens", responses=errors())
async def list_tokens(request: Request, caller: CallerDep, orchestrator: OrchestratorDep,
                      limit: LimitQuery = paging.DEFAULT_LIMIT, cursor: CursorQuery = None) -> Page[TokenOut]:
    """The caller's tokens (everyone's for admins), oldest first, without their secrets."""
    return await in_read_pool(request, lambda: Page[TokenOut].of(orchestrator.list_tokens(caller, limit, cursor),
                                                                 TokenOut.model_validate))


@router.delete("/{token_id}", response_model=TokenOut, summary="Revoke an API token", responses=errors(403, 404))
async def revoke_token(token_id: str, caller: CallerDep, orchestrator: OrchestratorDep,
                       token_sessions: TokenSessionsDep) -> TokenOut:
    """The token stops working at once: requests with it get 401, and the sessions it has open (shells,
    event streams, followed logs, streamed commands) end; a WebSocket closes with 4401."""
    token = await anyio.to_thread.run_sync(orchestrator.revoke_token, caller, token_id)
    await token_sessions.revoke(token.id)
    return TokenOut.model_validate(token)
