"""Local TCP connections tunnelled to a workspace's ports: each connection accepted on 127.0.0.1 gets a
tunnel WebSocket of its own (see vmhost/daemon/routes/ports.py), and bytes are pumped both ways, reading
one side only as fast as the other side takes them. An error that no later connection would escape (not
authenticated, forbidden, no such workspace) ends the whole forward; any other is reported and the
forward goes on."""

import asyncio
import functools
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import httpx
import wsproto.events
from anyio.abc import SocketAttribute
from httpx_ws import (
    AsyncWebSocketSession,
    WebSocketDisconnect,
    WebSocketNetworkError,
)

from vmhost.errors import InvalidInput, VmhostError

if TYPE_CHECKING:
    from vmhost.cli.client import VmhostClient

CHUNK = 64 * 1024
QUEUE = 4  # messages httpx-ws may hold from the daemon before the local side takes them
FATAL = (401, 403, 404)
EOF_FRAME = json.dumps({"type": "eof"})


@dataclass(frozen=True)
class Forward:
    local: int  # 0: any free port
    remote: int


def parse_forward(text: str) -> Forward:
    """`[LOCAL:]REMOTE`, e.g. "3000" or "8000:3000"."""
    local, _, remote = text.rpartition(":")
    try:
        forward = Forward(int(local) if local else int(remote), int(remote))
    except ValueError:
        raise InvalidInput(f"{text!r} is not [LOCAL:]REMOTE, e.g. 3000 or 8000:3000") from None
    if not (0 <= forward.local <= 65535 and 1 <= forward.remote <= 65535):
        raise InvalidInput(f"{text!r} names a port outside 1-65535")
    return forward


class Forwarder:
    def __init__(self, client: "VmhostClient", workspace: str, report: Callable[[str], None]) -> None:
        self.client = client
        self.workspace = workspace
        self.report = report
        self.fatal: VmhostError | None = None
        self.interrupted = False

    async def serve(self, forwards: list[Forward], on_listening: Callable[[Forward, int], None]) -> None:
        """Listen for every forward, then tunnel connections until Ctrl-C (then `interrupted`) or a fatal
        error."""
        asyncio.get_running_loop().set_exception_handler(_quiet_cancelled_reads)
        async with self.client.async_http() as http, anyio.create_task_group() as group:
            self.group = group
            await group.start(self._until_interrupted)
            for forward in forwards:
                try:
                    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=forward.local)
                except OSError as exc:
                    raise InvalidInput(f"cannot listen on 127.0.0.1:{forward.local}: {exc.strerror}") from None
                on_listening(forward, listener.extra(SocketAttribute.local_port))
                group.start_soon(listener.serve, functools.partial(self._handle, http, forward.remote))
        if self.fatal is not None:
            raise self.fatal

    async def _until_interrupted(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Ctrl-C ends the forward cleanly: the open tunnels are cancelled and `serve` returns (left to
        asyncio, a SIGINT that lands while a tunnel closes may surface as CancelledError, not
        KeyboardInterrupt)."""
        with anyio.open_signal_receiver(signal.SIGINT) as signals:
            task_status.started()
            async for _ in signals:
                self.interrupted = True
                self.group.cancel_scope.cancel()
                return

    async def _handle(self, http: httpx.AsyncClient, remote: int, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                await self._tunnel(http, remote, stream)
            except VmhostError as exc:
                if exc.http_status in FATAL:
                    self.fatal = exc
                    self.group.cancel_scope.cancel()
                else:
                    self.report(f"port {remote}: {exc.detail}")

    async def _tunnel(self, http: httpx.AsyncClient, remote: int, stream: anyio.abc.SocketStream) -> None:
        path = f"/ws/workspaces/{self.workspace}/ports/{remote}"
        async with self.client.async_websocket(http, path, max_message_size_bytes=4 * CHUNK, queue_size=QUEUE) as ws:
            closed = await _pump(ws, stream)
        if closed is not None and closed.code != 1000:
            raise self.client.closed_error(closed.code, closed.reason or "")


def _quiet_cancelled_reads(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Ctrl-C cancels the tunnels' reads on the daemon's Unix socket. When a socket became readable in the
    same turn of the loop, anyio's reader callback then sets the result of the read's cancelled future:
    InvalidStateError, harmless, but asyncio prints it with a traceback. Anything else is printed as it
    would be."""
    if not isinstance(context.get("exception"), asyncio.InvalidStateError):
        loop.default_exception_handler(context)


async def _pump(ws: AsyncWebSocketSession, stream: anyio.abc.SocketStream) -> WebSocketDisconnect | None:
    """Bytes both ways until either side ends; answers how the daemon closed, if it did."""
    async with anyio.create_task_group() as group:
        async def to_workspace() -> None:
            try:
                while True:
                    await ws.send_bytes(await stream.receive(CHUNK))
            except anyio.EndOfStream:
                await ws.send_text(EOF_FRAME)  # the answer may still come
            except (anyio.BrokenResourceError, OSError, WebSocketNetworkError):
                group.cancel_scope.cancel()

        group.start_soon(to_workspace)
        try:
            while True:
                event = await ws.receive()
                if isinstance(event, wsproto.events.BytesMessage):
                    await stream.send(bytes(event.data))
                elif isinstance(event, wsproto.events.TextMessage):
                    message = json.loads(event.data)
                    if message.get("type") == "error":
                        print(f"vmhost: {message.get('detail')}", file=sys.stderr)
        except WebSocketDisconnect as exc:
            return exc
        except WebSocketNetworkError:
            return WebSocketDisconnect(1006, "lost the connection")
        except (anyio.BrokenResourceError, OSError):
            return None  # the local side went away
        finally:
            group.cancel_scope.cancel()
    return None  # never reached: the loop ends by an exception
