"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import anyio.to_thread
from fastapi import Depends
from starlette.requests import HTTPConnection

from vmhost.core.models import Caller
from vmhost.core.orchestrator import Orchestrator
from vmhost.daemon.audit import READS


async def get_orchestrator(conn: HTTPConnection) -> Orchestrator:
    return conn.app.state.orchestrator


async def get_caller(conn: HTTPConnection) -> Caller:
    """Who is calling. Read-only callers are refused every HTTP method but reads here, in one place for
    every route (the core checks again for callers that do not come through HTTP).

    Both dependencies run on the event loop, not in the thread pool: a hop to a thread for every request
    cost more than the work, and no request waits for a free thread just to be identified. So telling
    who calls must stay quick and never wait on Docker or the network: tokens are checked through an
    in-memory cache (vmhost.core.tokencache), peer credentials come with the connection. Only a caller
    whose identity needs the host's account database (a proxy user, a socket user when there is an admin
    group) is identified in a thread."""
    authenticator = conn.app.state.authenticator
    if authenticator.asks_account_database(conn):  # which may be a network directory (sssd, LDAP)
        caller = await anyio.to_thread.run_sync(authenticator.caller, conn)
    else:
        caller = authenticator.caller(conn)
    if conn.scope["type"] == "http" and conn.scope["method"] not in READS:
        caller.require_write(f"{conn.scope['method']} {conn.url.path}")
    return caller


T = TypeVar("T")


async def in_read_pool(conn: HTTPConnection, read: Callable[[], T]) -> T:
    """`read()` in the threads kept for routes that only read the database (never Docker): they do not
    queue behind the default pool's requests, some of which wait on Docker."""
    return await anyio.to_thread.run_sync(read, limiter=conn.app.state.read_limiter)


OrchestratorDep = Annotated[Orchestrator, Depends(get_orchestrator)]
CallerDep = Annotated[Caller, Depends(get_caller)]
