"""Connections from the daemon's async code to a workspace's port: as a socket (for asyncio and the
WebSocket client), as an anyio stream (the tunnel), and under the preview's HTTP client, whose
connections go where the request's target says (the container's address, or a relay through a
cluster's node) rather than where the URL's host points.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import httpcore
import httpx
from httpcore._backends.anyio import AnyIOStream

from vmhost.core.ports import PortTarget

_request_target: ContextVar[PortTarget] = ContextVar("vmhost_preview_target")


RELAY_CONNECTS = 64  # relays being connected at once (each holds a worker thread meanwhile)
_relay_limiter: anyio.CapacityLimiter | None = None


async def connect_socket(target: PortTarget, timeout: float) -> socket.socket:
    """A socket connected to the target's port; OSError when nothing answers within `timeout` seconds.
    A container's address is connected to on the event loop; a relay (which blocks while its command
    starts) in a worker thread under a limit of its own, apart from the default limit that the rest of
    the daemon's blocking calls share, which slow relays thus never use up (each user's share of relays
    is bounded by their tunnel and preview limits)."""
    global _relay_limiter
    if target.relay is None:
        return await _connect_tcp(target.host, target.port, timeout)
    if _relay_limiter is None:
        _relay_limiter = anyio.CapacityLimiter(RELAY_CONNECTS)
    return await anyio.to_thread.run_sync(target.relay, timeout, limiter=_relay_limiter)


async def _connect_tcp(host: str, port: int, timeout: float) -> socket.socket:
    connection = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        connection.setblocking(False)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with anyio.fail_after(timeout):
            await asyncio.get_running_loop().sock_connect(connection, (host, port))
    except BaseException:
        connection.close()
        raise
    return connection


async def connect(target: PortTarget, timeout: float) -> anyio.abc.SocketStream:
    """The target's port as an anyio stream; OSError when nothing answers within `timeout` seconds."""
    connection = await connect_socket(target, timeout)
    try:
        return await anyio.abc.SocketStream.from_socket(connection)
    except BaseException:
        connection.close()
        raise


class _TargetBackend(httpcore.AnyIOBackend):
    """Connects to the target of the request in progress (as `send_to` set it), whatever the URL says."""

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            stream = await connect(_request_target.get(), timeout or 10.0)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return AnyIOStream(stream)


class PreviewTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, its connections made by `_TargetBackend`: a connection of its own per request
    (no pooled connection outlives a request: a workspace's address may be another's after a restart)."""

    def __init__(self) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(max_connections=None, max_keepalive_connections=0,
                                                  network_backend=_TargetBackend())


async def send_to(client: httpx.AsyncClient, target: PortTarget, request: httpx.Request) -> httpx.Response:
    """`client.send(request, stream=True)` over a connection to `target` (the client's transport is a
    `PreviewTransport`)."""
    token = _request_target.set(target)
    try:
        return await client.send(request, stream=True)
    finally:
        _request_target.reset(token)
