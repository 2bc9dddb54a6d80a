"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends
from starlette.requests import HTTPConnection

from vmhost.config import Settings
from vmhost.core.audit import AuditLog
from vmhost.core.events import EventBus
from vmhost.core.models import Caller
from vmhost.core.orchestrator import Orchestrator
from vmhost.daemon.audit import READS
from vmhost.daemon.metrics import Metrics
from vmhost.daemon.revocation import LiveSessions
from vmhost.daemon.services import Services, services_of


async def get_caller(conn: HTTPConnection) -> Caller:
    """Who is calling. Read-only callers are refused every HTTP method but reads here, in one place for
    every route (the core checks again for callers that do not come through HTTP).

    Like every dependency here it runs on the event loop, not in the thread pool: a hop to a thread for
    every request cost more than the work, and no request waits for a free thread just to be identified.
    So telling who calls must stay quick and never wait on Docker or the network: tokens are checked
    through an in-memory cache (vmhost.core.tokencache), peer credentials come with the connection. Only
    a caller whose identity needs the host's account database (a proxy user, a socket user when there is
    an admin group) is identified in a thread."""
    authenticator = services_of(conn).authenticator
    if authenticator.asks_account_database(conn):  # which may be a network directory (sssd, LDAP)
        caller = await anyio.to_thread.run_sync(authenticator.caller, conn)
    else:
        caller = authenticator.caller(conn)
    return require_scope(conn, caller)


def require_scope(conn: HTTPConnection, caller: Caller) -> Caller:
    """The caller, if its scope allows the request's method (a read-only caller: reads only)."""
    if conn.scope["type"] == "http" and conn.scope["method"] not in READS:
        caller.require_write(f"{conn.scope['method']} {conn.url.path}")
    return caller


T = TypeVar("T")


async def in_read_pool(conn: HTTPConnection, read: Callable[[], T]) -> T:
    """`read()` in the threads kept for routes that only read the database (never Docker): they do not
    queue behind the default pool's requests, some of which wait on Docker."""
    return await anyio.to_thread.run_sync(read, limiter=services_of(conn).read_limiter)


def _service(pick: Callable[[Services], T]) -> Callable[[HTTPConnection], Coroutine[Any, Any, T]]:
    """A dependency giving one of the app's services. A coroutine, so that FastAPI calls it on the event
    loop rather than in a thread."""
    async def service(conn: HTTPConnection) -> T:
        return pick(services_of(conn))
    return service


CallerDep = Annotated[Caller, Depends(get_caller)]
OrchestratorDep = Annotated[Orchestrator, Depends(_service(lambda services: services.orchestrator))]
SettingsDep = Annotated[Settings, Depends(_service(lambda services: services.settings))]
EventsDep = Annotated[EventBus, Depends(_service(lambda services: services.events))]
TokenSessionsDep = Annotated[LiveSessions, Depends(_service(lambda services: services.token_sessions))]
MetricsDep = Annotated[Metrics, Depends(_service(lambda services: services.metrics))]
AuditDep = Annotated[AuditLog, Depends(_service(lambda services: services.audit))]
StreamLimiterDep = Annotated[anyio.CapacityLimiter, Depends(_service(lambda services: services.stream_limiter))]
