"""Recording the audit log, in one place: an ASGI middleware around the whole app that sees each
request's caller (left by the caller dependency), its route and its final status.

Recorded: every request that is not a read (GET/HEAD/OPTIONS), every request refused with 401 or 403,
and every WebSocket session (when it is refused, else when it starts and when it ends, with status 101).
Requests through a port's preview are recorded once per preview session instead (see `preview_request`).
A streamed answer to a mutation (a command's output) is recorded when it starts and when it ends too.
An HTTP entry is written before the last byte of the answer goes out, so a client that got its answer
finds it there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import MutableMapping
from typing import Any

import anyio.to_thread

from vmhost.core.audit import AuditEntry, AuditLog
from vmhost.core.models import Caller
from vmhost.daemon.peercred import PEER_KEY
from vmhost.errors import VmhostError

log = logging.getLogger(__name__)

AUDIT_KEY = "vmhost.audit"
READS = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSED = (401, 403)
MAX_CAPTURE = 64 * 1024
_WORKSPACE_PARAMS = ("ref", "workspace", "workspace_id")

Scope = MutableMapping[str, Any]


def remember_caller(scope: Scope, caller: Caller) -> None:
    """Called by the caller dependency: who this request is, for the entry."""
    record = scope.get(AUDIT_KEY)
    if record is not None:
        record["caller"] = caller


def remember_forwarded_for(scope: Scope, address: str | None) -> None:
    """Called by the authenticator: the client a trusted proxy forwards, for the entry."""
    record = scope.get(AUDIT_KEY)
    if record is not None:
        record["forwarded_for"] = address


def preview_request(scope: Scope, starts_session: bool) -> None:
    """Called by a port's preview for each request it forwards: only the request that starts a preview
    session is recorded (phase "start", when its answer starts, whatever its method), the others not
    at all, or every asset of every page would be an entry."""
    record = scope.get(AUDIT_KEY)
    if record is not None:
        record["preview"] = "start" if starts_session else "quiet"


async def session_started(scope: Scope) -> None:
    """Called when a WebSocket session has its caller and its target: its start entry."""
    start = (scope.get(AUDIT_KEY) or {}).get("start")
    if start is not None:
        await start()


def _streamed(message: dict[str, Any]) -> bool:
    """An answer that goes on for a while (a StreamingResponse has no Content-Length)."""
    return message["status"] == 200 and all(name != b"content-length" for name, _ in message.get("headers", []))


def _door(scope: Scope, headers: dict[bytes, bytes]) -> str:
    """How an unauthenticated request tried to come in."""
    if scope.get(PEER_KEY) is not None:
        return "socket"
    if b"authorization" in headers or b"token=" in scope.get("query_string", b""):
        return "token"
    if b"x-vm-user" in headers:
        return "proxy"
    return "anonymous"


def _address(scope: Scope) -> str | None:
    peer = scope.get(PEER_KEY)
    if peer is not None:
        pid, uid, _ = peer
        return f"unix:uid={uid},pid={pid}"
    client = scope.get("client")
    return client[0] if client else None


def _from_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _workspace(answer: dict[str, Any], path_params: dict[str, Any]) -> tuple[str | None, str | None]:
    """The workspace a request touched: as the answer names it (an operation, or a created workspace),
    else as the path named it."""
    nested = answer.get("workspace")
    if isinstance(nested, dict) and isinstance(nested.get("id"), str):
        return nested["id"], nested.get("name")
    if isinstance(answer.get("workspace_id"), str):
        return answer["workspace_id"], answer.get("workspace_name")
    for key in _WORKSPACE_PARAMS:
        ref = path_params.get(key)
        if isinstance(ref, str):
            return (ref, None) if ref.startswith("ws_") else (None, ref)
    return None, None


class AuditTrail:
    def __init__(self, app: Any, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        websocket = scope["type"] == "websocket"
        method = "WS" if websocket else scope["method"]
        record: dict[str, Any] = {}
        scope[AUDIT_KEY] = record
        state: dict[str, Any] = {"status": None, "body": b"", "done": False, "started": False}

        def recorded(status: int) -> bool:
            return websocket or method not in READS or status in REFUSED

        async def save(entry: AuditEntry) -> None:
            try:
                await anyio.to_thread.run_sync(self.audit.record, entry)
            except VmhostError as exc:  # e.g. a full disk: the answer still goes out, the log says what was lost
                log.error("audit entry not recorded (%s): %s", exc.detail, entry)

        async def start() -> None:
            if state["started"] or state["done"]:
                return
            state["started"] = True
            await save(self._entry(scope, method, state["status"] or 101, record, {}, "start"))

        async def write(status: int) -> None:
            if state["done"] or "preview" in record or not recorded(status):
                return
            state["done"] = True
            phase = "end" if state["started"] else None
            await save(self._entry(scope, method, status, record, _from_body(state["body"]), phase))

        record["start"] = start

        async def watching_send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.http.response.start"):
                state["status"] = message["status"]
                preview = record.get("preview")
                if preview == "start" or (preview is None and not websocket and method not in READS
                                          and _streamed(message)):
                    await start()
            elif kind in ("http.response.body", "websocket.http.response.body"):
                if len(state["body"]) < MAX_CAPTURE and recorded(state["status"] or 500):
                    state["body"] += message.get("body", b"")[:MAX_CAPTURE]
                if not message.get("more_body", False):
                    await write(state["status"] or 500)
            elif kind == "websocket.accept":
                state["status"] = 101
            elif kind == "websocket.close" and state["status"] in (None, 101):
                # a refusal is a close with 4000 + the HTTP status (vmhost.daemon.websockets)
                code = message.get("code", 1000)
                if code >= 4000:
                    await write(code - 4000)
                elif state["status"] is None:
                    await write(403)  # closed before accepting: the server's handshake refusal
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        except Exception:
            await write(500)
            raise
        if state["status"] is not None:
            await write(state["status"])

    @staticmethod
    def _entry(scope: Scope, method: str, status: int, record: dict[str, Any], answer: dict[str, Any],
               phase: str | None = None) -> AuditEntry:
        caller: Caller | None = record.get("caller")
        headers = dict(scope.get("headers") or [])
        endpoint = scope.get("endpoint")
        path_params = scope.get("path_params") or {}
        action = getattr(endpoint, "__name__", None)
        if action and isinstance(path_params.get("action"), str):
            action = f"{action}:{path_params['action']}"
        workspace_id, workspace_name = _workspace(answer if status < 400 else {}, path_params)
        code = answer.get("code") if status >= 400 and isinstance(answer.get("code"), str) else None
        return AuditEntry(
            user=caller.user if caller else None,
            door=caller.door.value if caller else _door(scope, headers),
            address=_address(scope),
            method=method,
            path=scope.get("path", ""),
            action=action,
            workspace_id=workspace_id,
            workspace_name=workspace_name,
            status=status,
            code=code,
            forwarded_for=record.get("forwarded_for"),
            phase=phase,
        )
