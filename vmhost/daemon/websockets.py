"""What the WebSocket routes share: authentication exactly like REST, errors as close codes, and
pumping messages until the client goes away.

The handshake is always accepted; a refused caller then gets a close frame with code 4000 + the HTTP
status the same error has on REST (4401 not authenticated, 4403 forbidden, 4404 unknown or another
user's workspace, 4409 wrong state, 4422 bad parameters) and the error's detail as the reason. Browsers
cannot read the status of a refused handshake, but they do see close codes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from starlette.websockets import WebSocket, WebSocketDisconnect

from vmhost.core.models import Caller
from vmhost.core.sessions import SessionKind
from vmhost.daemon.sessions import hold
from vmhost.errors import InvalidInput, VmhostError

T = TypeVar("T")

CLOSE_BASE = 4000
MAX_REASON_BYTES = 120


def close_code(error: VmhostError) -> int:
    return CLOSE_BASE + error.http_status


async def close_with(websocket: WebSocket, error: VmhostError) -> None:
    reason = error.detail.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
    await websocket.close(code=close_code(error), reason=reason)


async def accept_as(websocket: WebSocket, resolve: Callable[[Caller], T],
                    kind: SessionKind | None = None) -> T | None:
    """Accept, identify the caller like the REST API does, hold a session of `kind` for the socket's life
    (4429 past the caller's limit), then run `resolve(caller)` (in a thread: it may touch the database or
    Docker). On any VmhostError the socket is closed with its code; None then."""
    await websocket.accept()
    try:
        caller = await anyio.to_thread.run_sync(websocket.app.state.authenticator.caller, websocket)
        if kind is not None:
            hold(websocket, caller, kind)
        return await anyio.to_thread.run_sync(resolve, caller)
    except VmhostError as exc:
        await close_with(websocket, exc)
        return None


def int_param(websocket: WebSocket, name: str) -> int | None:
    text = websocket.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, not {text!r}") from None
    if value < 0:
        raise InvalidInput(f"{name} must not be negative")
    return value


async def send_until_disconnect(websocket: WebSocket, messages: AsyncIterator[dict[str, Any]]) -> None:
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
