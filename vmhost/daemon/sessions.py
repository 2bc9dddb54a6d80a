"""Long-lived sessions held by a request or a WebSocket: a route calls `hold()` once it knows its
caller, and the session is given back when the request's answer has been sent in full (or the client
went away), however the route ended."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from vmhost.config import Settings
from vmhost.core.models import Caller
from vmhost.core.sessions import Session, SessionGate, SessionKind
from vmhost.daemon.services import services_of

SCOPE_KEY = "vmhost.sessions"


def session_gate(settings: Settings) -> SessionGate:
    return SessionGate({
        SessionKind.COMMAND_STREAM: settings.user_max_command_streams,
        SessionKind.WAIT: settings.user_max_waits,
        SessionKind.SHELL: settings.user_max_shells,
        SessionKind.LOG_STREAM: settings.user_max_log_streams,
        SessionKind.EVENT_STREAM: settings.user_max_event_streams,
        SessionKind.TUNNEL: settings.user_max_tunnels,
        SessionKind.PREVIEW: settings.user_max_preview_requests,
        SessionKind.SSH: settings.user_max_ssh_sessions,
    })


def hold(connection: HTTPConnection, caller: Caller, kind: SessionKind) -> None:
    """Open a session of `kind` for the caller until this request ends (TooManyRequests past the limit)."""
    session = services_of(connection).sessions.open(kind, caller.user)
    connection.scope[SCOPE_KEY].append(session)


class ReleaseSessions:
    """ASGI middleware: gives back every session a request opened once the app has finished with it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        held: list[Session] = []
        scope[SCOPE_KEY] = held
        try:
            await self.app(scope, receive, send)
        finally:
            for session in held:
                session.release()
