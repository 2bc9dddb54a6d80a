"""The daemon's long-lived parts, made once by create_app and kept in the app's state. Routes get
them through the dependencies in vmhost.daemon.deps; code that runs outside FastAPI's dependency
solving (helpers, the routes that skip it for speed) reads them with `services_of`."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from starlette.requests import HTTPConnection

from vmhost.config import Settings
from vmhost.core.audit import AuditLog
from vmhost.core.events import EventBus
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.sessions import SessionGate
from vmhost.daemon.auth import Authenticator
from vmhost.daemon.listcache import WorkspaceListCache
from vmhost.daemon.metrics import Metrics
from vmhost.daemon.preview import Previews
from vmhost.daemon.revocation import LiveSessions
from vmhost.daemon.ssh import SshServer


@dataclass(frozen=True, slots=True)
class Services:
    orchestrator: Orchestrator
    settings: Settings
    authenticator: Authenticator
    events: EventBus
    workspace_lists: WorkspaceListCache
    sessions: SessionGate  # each user's limits on long-lived sessions (shells, waits, streams)
    token_sessions: LiveSessions  # the sessions each API token has open, ended when it is revoked
    metrics: Metrics
    audit: AuditLog
    # threads of their own for routes that only read the database: never queued behind the default
    # pool's requests, some of which wait on Docker
    read_limiter: anyio.CapacityLimiter
    # threads for long-lived streams (terminal readers, followed logs), apart from the request pool
    stream_limiter: anyio.CapacityLimiter
    previews: Previews  # the ports' HTTP previews: their client, sessions and cookies
    ssh: SshServer  # the SSH server (listening only when ssh_bind is set) and ssh-proxy's connections


def services_of(conn: HTTPConnection) -> Services:
    """The services of the app serving `conn`."""
    return conn.app.state.services
