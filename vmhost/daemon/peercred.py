"""Who is on the other end of the Unix socket.

ASGI does not expose the connection's socket, so uvicorn's protocol classes are extended: when a
connection arrives on an AF_UNIX socket, its SO_PEERCRED (pid, uid, gid) is read once and put into
every request's scope under `PEER_KEY`. TCP connections are left alone.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

PEER_KEY = "vmhost.peer"
_CRED = struct.Struct("3i")


def read_peer(transport: Any) -> tuple[int, int, int] | None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))


class _PeerCredentials:
    app: Any

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        peer = read_peer(transport)
        if peer is not None:
            inner = self.app

            async def app_with_peer(scope: dict, receive: Any, send: Any) -> None:
                scope[PEER_KEY] = peer
                await inner(scope, receive, send)

            self.app = app_with_peer


class PeerH11Protocol(_PeerCredentials, H11Protocol):
    pass


class PeerWebSocketProtocol(_PeerCredentials, WebSocketsSansIOProtocol):
    pass
