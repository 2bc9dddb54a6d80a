"""A WebSocket through a port's preview: the daemon opens a WebSocket to the workspace's server (with
the request's path, query, subprotocols and end-to-end headers, vmhost's credentials dropped as for
any preview request) and relays messages both ways.

Text stays text and binary stays binary. Either side's close is passed to the other with its code
(a code that may not be sent, like 1005 "no status", becomes 1000). After `idle_timeout` seconds
without a message either way both sides are closed (the client with 4408). Buffering is bounded:
the daemon reads the next message from a side only once the other side has taken the last one (the
client's library keeps at most `MAX_QUEUE` messages of the workspace's, each at most `MAX_MESSAGE`
bytes), so a slow reader slows the sender rather than filling the daemon's memory.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from vmhost.core.ports import PortTarget
from vmhost.daemon.port_connections import connect_socket
from vmhost.daemon.preview import CONNECT_TIMEOUT, Forwarding, Headers, upstream_headers
from vmhost.daemon.websockets import IdleWatch, close_quietly
from vmhost.errors import PortTimeout, PortUnreachable

MAX_MESSAGE = 16 * 1024 * 1024  # as much as the daemon takes from its own clients (uvicorn's default)
MAX_QUEUE = 4
HANDSHAKE = frozenset({b"sec-websocket-key", b"sec-websocket-version", b"sec-websocket-extensions",
                       b"sec-websocket-protocol", b"sec-websocket-accept", b"user-agent"})
UNSENDABLE = {1005: 1000, 1006: 1011, 1015: 1011}  # codes the protocol reserves for "none was received"


def socket_headers(headers: Headers, forwarding: Forwarding) -> Headers:
    """The headers of a WebSocket request as they go to the workspace's server: those of any preview
    request, but the handshake's own, which the daemon's client makes anew (it passes the subprotocols
    and the User-Agent itself)."""
    return [(name, value) for name, value in upstream_headers(headers, forwarding) if name not in HANDSHAKE]


def sendable(code: int | None) -> int:
    """A close code that may go in a close frame: the one received, or what stands for it."""
    if code is None:
        return 1000
    return UNSENDABLE.get(code, code)


async def open_upstream(target: PortTarget, raw_target: bytes, headers: Headers, subprotocols: list[str],
                        user_agent: str | None, open_timeout: float) -> ClientConnection:
    """A WebSocket to the workspace's server (PortUnreachable when nothing answers or it refuses the
    upgrade, PortTimeout when it does not answer within `open_timeout`)."""
    where = f"port {target.port} of workspace {target.workspace.name!r}"
    host = f"[{target.host}]" if ":" in target.host else target.host
    uri = f"ws://{host}:{target.port}{raw_target.decode('latin-1')}"
    try:
        with anyio.fail_after(open_timeout):
            connection = await connect_socket(target, CONNECT_TIMEOUT)
            try:
                return await connect(uri, sock=connection,
                                     additional_headers=[(n.decode("latin-1"), v.decode("latin-1"))
                                                         for n, v in headers],
                                     subprotocols=[Subprotocol(p) for p in subprotocols] or None,
                                     user_agent_header=user_agent, compression=None, proxy=None,
                                     open_timeout=None, ping_interval=None, max_size=MAX_MESSAGE,
                                     max_queue=MAX_QUEUE, close_timeout=CONNECT_TIMEOUT)
            except BaseException:
                connection.close()  # websockets closes it too on a failed handshake: closing twice is harmless
                raise
    except TimeoutError as exc:
        raise PortTimeout(f"the server on {where} did not answer the WebSocket upgrade within "
                          f"{open_timeout:g} s (VMHOST_PREVIEW_IDLE_TIMEOUT)") from exc
    except InvalidStatus as exc:
        raise PortUnreachable(f"the server on {where} refused the WebSocket upgrade: HTTP "
                              f"{exc.response.status_code}") from exc
    except (OSError, InvalidHandshake) as exc:
        raise PortUnreachable(f"no WebSocket server answers on {where}: {exc or type(exc).__name__}") from exc


async def relay(websocket: WebSocket, upstream: ClientConnection, idle_timeout: float,
                on_traffic: Callable[[], None]) -> None:
    """Messages both ways until either side closes or nothing moves for `idle_timeout` seconds."""
    idle = IdleWatch(idle_timeout, on_traffic)

    async with anyio.create_task_group() as group:
        async def from_workspace() -> None:
            try:
                while True:
                    message = await upstream.recv()
                    idle.moved()
                    if isinstance(message, str):
                        await websocket.send_text(message)
                    else:
                        await websocket.send_bytes(message)
            except ConnectionClosed as closed:
                received = closed.rcvd
                await close_quietly(websocket, sendable(received.code if received else 1006),
                                    received.reason if received else "the workspace's server went away")
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass  # the client left first
            group.cancel_scope.cancel()

        group.start_soon(from_workspace)
        group.start_soon(idle.close_when_idle, websocket, group.cancel_scope)
        code, reason = 1000, ""
        try:
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                idle.moved()
                if message.get("text") is not None:
                    await upstream.send(message["text"])  # waits while the workspace's side takes nothing
                elif message.get("bytes") is not None:
                    await upstream.send(message["bytes"])
            code, reason = sendable(message.get("code")), message.get("reason") or ""
        except ConnectionClosed:
            return  # from_workspace passes the workspace's close on, and ends the group
        finally:
            with anyio.move_on_after(CONNECT_TIMEOUT, shield=True):
                await upstream.close(code, reason)
        group.cancel_scope.cancel()
