"""What the WebSocket routes share: authentication exactly like REST, errors as close codes, and
pumping messages until the client goes away.

The handshake is always accepted; a refused caller then gets a close frame with code 4000 + the HTTP
status the same error has on REST (4401 not authenticated, 4403 forbidden, 4404 unknown or another
user's workspace, 4409 wrong state, 4422 bad parameters) and the error's detail as the reason. Browsers
cannot read the status of a refused handshake, but they do see close codes. The protocol allows a
reason of 123 bytes: a longer detail is shortened there on a word boundary, with an ellipsis, and sent
whole just before the close as a text frame `{"type": "error", "detail": ..., "code": ...}`.
A session whose API token is revoked while it runs is closed with 4401.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from vmhost.core.models import Caller
from vmhost.core.sessions import SessionKind
from vmhost.daemon.audit import session_started
from vmhost.daemon.services import services_of
from vmhost.daemon.sessions import hold
from vmhost.errors import InvalidInput, Unauthenticated, VmhostError

T = TypeVar("T")

CLOSE_BASE = 4000
CLOSE_TIMEOUT = 5.0  # for a close frame to a client that reads nothing
MAX_REASON_BYTES = 123  # RFC 6455 5.5: a control frame's payload is 125 bytes, 2 of them the code
ELLIPSIS = "…"
MAX_INT = 2**63 - 1  # the largest integer SQLite stores


def close_code(error: VmhostError) -> int:
    return CLOSE_BASE + error.http_status


def close_reason(detail: str) -> str:
    """`detail` if it fits in a close frame, else its longest run of whole words that fits with an
    ellipsis after it (cut inside a word only when the first word alone is too long, never inside a
    character)."""
    if len(detail.encode()) <= MAX_REASON_BYTES:
        return detail
    head = detail.encode()[:MAX_REASON_BYTES - len(ELLIPSIS.encode())].decode(errors="ignore")
    if not detail[len(head)].isspace() and any(c.isspace() for c in head):
        head = head.rsplit(None, 1)[0]
    return head.rstrip() + ELLIPSIS


async def close_with(websocket: WebSocket, error: VmhostError) -> None:
    reason = close_reason(error.detail)
    if reason != error.detail:
        await websocket.send_text(json.dumps({"type": "error", "detail": error.detail, "code": error.code}))
    await websocket.close(code=close_code(error), reason=reason)


@asynccontextmanager
async def accepted_as(websocket: WebSocket, resolve: Callable[[Caller], T], kind: SessionKind | None = None,
                      release: Callable[[T], object] | None = None) -> AsyncIterator[T | None]:
    """Accept, identify the caller like the REST API does, hold a session of `kind` for the socket's life
    (4429 past the caller's limit), then run `resolve(caller)` (in a thread: it may touch the database or
    Docker). On any VmhostError the socket is closed with its code and this gives None. Else it gives
    what `resolve` answered, for the session's life: the session's start is audited, and revoking the
    caller's token meanwhile closes the socket with 4401, then runs `release` on what `resolve` answered
    (in a thread; e.g. closing a terminal, which a client that reads nothing, and so never gets the close
    frame, would otherwise keep typing into)."""
    await websocket.accept()
    services = services_of(websocket)
    try:
        caller = await anyio.to_thread.run_sync(services.authenticator.caller, websocket)
        if kind is not None:
            hold(websocket, caller, kind)
        resolved = await anyio.to_thread.run_sync(resolve, caller)
    except VmhostError as exc:
        await close_with(websocket, exc)
        yield None
        return
    await session_started(websocket.scope)

    async def end() -> None:
        if websocket.application_state == WebSocketState.CONNECTED:
            with anyio.move_on_after(CLOSE_TIMEOUT):
                try:
                    await close_with(websocket, Unauthenticated("this API token was revoked"))
                except (OSError, RuntimeError):
                    pass  # the client has just gone
        if release is not None:
            await anyio.to_thread.run_sync(release, resolved)

    async with services.token_sessions.hold(caller, end):
        yield resolved


async def refuse(scope: dict[str, Any], receive: Any, send: Any, error: VmhostError) -> None:
    """Answer with `error` from an ASGI middleware: its JSON body, or on a WebSocket a close saying it."""
    if scope["type"] == "websocket":
        websocket = WebSocket(scope, receive, send)
        await websocket.accept()
        await close_with(websocket, error)
    else:
        await JSONResponse(error.to_dict(), status_code=error.http_status)(scope, receive, send)


async def close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    """Close with `code`, unless the client has gone already (within CLOSE_TIMEOUT: it may read nothing)."""
    with anyio.move_on_after(CLOSE_TIMEOUT):
        try:
            await websocket.close(code, reason)
        except (OSError, RuntimeError):
            pass  # already closed, or the client has gone


def int_param(websocket: WebSocket, name: str, maximum: int = MAX_INT) -> int | None:
    """A query parameter of digits only, at most `maximum` (by default the largest SQLite integer)."""
    text = websocket.query_params.get(name)
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit():
        raise InvalidInput(f"{name} must be a whole number of 0 or more, not {text[:40]!r}")
    if len(text) > len(str(maximum)) or int(text) > maximum:
        raise InvalidInput(f"{name} must be at most {maximum}")
    return int(text)


async def send_until_disconnect(websocket: WebSocket, messages: AsyncGenerator[dict[str, Any], None]) -> None:
    """Send every message as a JSON text frame until the messages end or the client goes away (frames
    the client sends are read and ignored, so a disconnect is noticed even on an idle stream)."""
    async with anyio.create_task_group() as group:
        async def pump() -> None:
            try:
                async with aclosing(messages):
                    async for message in messages:
                        await websocket.send_text(json.dumps(message))
            except (WebSocketDisconnect, OSError, RuntimeError):
                pass  # the client went away mid-send
            group.cancel_scope.cancel()

        group.start_soon(pump)
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
        group.cancel_scope.cancel()


IDLE_CLOSE = 4408  # 4000 + HTTP 408 Request Timeout


class IdleWatch:
    """When traffic last went through a relayed WebSocket (`moved()`, which also calls `on_traffic`), and
    `close_when_idle`, which closes the socket with 4408 once nothing has moved for `timeout` seconds."""

    def __init__(self, timeout: float, on_traffic: Callable[[], None]) -> None:
        self.timeout = timeout
        self.on_traffic = on_traffic
        self.last = anyio.current_time()

    def moved(self) -> None:
        self.last = anyio.current_time()
        self.on_traffic()

    async def close_when_idle(self, websocket: WebSocket, relay: anyio.CancelScope) -> None:
        """Wait until nothing has moved for the timeout, then close the socket and cancel `relay`."""
        while (left := self.last + self.timeout - anyio.current_time()) > 0:
            await anyio.sleep(left)
        await close_quietly(websocket, IDLE_CLOSE, f"no traffic for {math.ceil(self.timeout)} s")
        relay.cancel()
