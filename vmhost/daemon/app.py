"""create_app(orchestrator, settings) -> the FastAPI application. Background workers run in its
lifespan, so they start and stop exactly once whatever sockets the server listens on."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI

import vmhost
from vmhost.config import Settings
from vmhost.core.audit import AuditLog
from vmhost.core.events import EventBus
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.workers import Worker
from vmhost.daemon import apidoc, errors
from vmhost.daemon.audit import AuditTrail
from vmhost.daemon.auth import Authenticator
from vmhost.daemon.limits import BodyLimit
from vmhost.daemon.listcache import WorkspaceListCache
from vmhost.daemon.metrics import Metrics, RequestMetrics
from vmhost.daemon.origin import SameOrigin
from vmhost.daemon.preview import Previews, PreviewSandbox
from vmhost.daemon.preview_host import PreviewHosts
from vmhost.daemon.revocation import LiveSessions
from vmhost.daemon.routes import (
    admin,
    audit,
    commands,
    edits,
    events,
    files,
    health,
    me,
    nodes,
    operations,
    pools,
    ports,
    preview,
    quotas,
    shell,
    snapshots,
    ssh,
    sshkeys,
    templates,
    tokens,
    ui,
    workspaces,
)
from vmhost.daemon.services import Services
from vmhost.daemon.sessions import ReleaseSessions, session_gate
from vmhost.daemon.ssh import SshServer

log = logging.getLogger(__name__)

REQUEST_THREADS = 128
READ_THREADS = 16
STREAM_THREADS = 2048  # enough for 100 users at the default limits of shells and log reads (8 + 8 each)

DESCRIPTION = """\
The vmhost API manages development workspaces (a Docker container and its `/workspace` volume) on one
shared host. It listens on a Unix socket (callers identified by their uid; root is an admin) and on TCP
(`Authorization: Bearer <token>`, or `X-VM-User` from a trusted proxy). Mutations answer `202` with an
operation; wait on it with `GET /api/v1/operations/{id}/wait`. Errors are `{"detail": ..., "code": ...}`.
"""


def create_app(orchestrator: Orchestrator, settings: Settings,
               workers: Sequence[Worker] = ()) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # short blocking handlers run in the default pool; a session that holds a thread for its whole
        # life (a shell's reader, a log stream) takes it from its own pool, so it never starves them
        anyio.to_thread.current_default_thread_limiter().total_tokens = REQUEST_THREADS
        await anyio.to_thread.run_sync(orchestrator.recover)
        for worker in workers:
            worker.start()
        await services.ssh.start()
        log.info("vmhost %s serving", vmhost.__version__)
        try:
            yield
        finally:
            await services.ssh.close()
            for worker in workers:
                worker.stop()
            await services.previews.client.aclose()
            await anyio.to_thread.run_sync(orchestrator.close)

    # no /docs or /redoc: FastAPI's pages load their scripts from a CDN; the spec is /openapi.json
    app = FastAPI(title="vmhost", version=vmhost.__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    # the limiters may be made outside the event loop: anyio binds them to it when first used
    sessions, audit_log, stream_limiter = session_gate(settings), AuditLog(orchestrator.store), \
        anyio.CapacityLimiter(STREAM_THREADS)
    services = Services(orchestrator=orchestrator, settings=settings,
                        authenticator=Authenticator(settings, orchestrator),
                        events=EventBus(orchestrator.store, orchestrator.activity),
                        workspace_lists=WorkspaceListCache(orchestrator.store), sessions=sessions,
                        token_sessions=LiveSessions(), metrics=Metrics(orchestrator.store, workers, orchestrator.pools),
                        audit=audit_log, read_limiter=anyio.CapacityLimiter(READ_THREADS),
                        stream_limiter=stream_limiter, previews=Previews(settings.preview_idle_timeout),
                        ssh=SshServer(orchestrator, settings, sessions, audit_log, stream_limiter))
    app.state.services = services
    errors.install(app)
    # edits, commands, snapshots, ports and preview before workspaces, whose POST /{ref}/{action} would catch
    # their paths; the busiest routes early, as each request tries the routes in this order
    for module in (edits, commands, snapshots, ports, preview, workspaces, operations, health, admin, files, templates,
                   tokens, sshkeys, ui, events, shell, ssh, quotas, me, audit, nodes, pools):
        app.include_router(module.router, generate_unique_id_function=apidoc.operation_id)
    apidoc.install(app)
    app.add_middleware(ReleaseSessions)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes,
                       larger={files.UPLOAD_PATH: settings.max_upload_bytes,
                               preview.PROXY_PATH: settings.max_upload_bytes})
    app.add_middleware(RequestMetrics, metrics=services.metrics)
    app.add_middleware(SameOrigin, trusted_proxy=services.authenticator.is_trusted_proxy)
    app.add_middleware(PreviewSandbox, is_preview=preview.is_path_preview)
    if settings.preview_domain:
        app.add_middleware(PreviewHosts, domain=settings.preview_domain, cookies=services.previews.cookies,
                           https=lambda conn: ports.forwarding_of(conn).proto == "https")
    app.add_middleware(AuditTrail, audit=services.audit)  # outermost: sees every answer, 413s included
    return app
