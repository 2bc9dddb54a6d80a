"""ssh-proxy's way in: a WebSocket that carries an SSH connection's raw bytes to the daemon's SSH server
(vmhost.daemon.ssh), so that `ssh NAME.vmhost` needs no port of its own, only the socket or the API.

`/ws/ssh?workspace=REF`: binary frames both ways are the SSH connection's bytes. The caller is identified
like on every other route (socket peer, or API token on TCP) and needs a write scope; the SSH server then
takes that caller, and the workspace named here, as the connection's login (no key is asked). The daemon
closes with 1000 when the SSH connection ends, 4409 when the SSH server is off (ssh_bind empty).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import anyio
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from vmhost.core.models import Caller
from vmhost.daemon.deps import OrchestratorDep
from vmhost.daemon.services import services_of
from vmhost.daemon.ssh import CHUNK, Login
from vmhost.daemon.websockets import accepted_as, close_quietly
from vmhost.errors import InvalidInput, InvalidState

log = logging.getLogger(__name__)

router = APIRouter(tags=["workspaces"])


@router.websocket("/ws/ssh")
async def ssh_socket(websocket: WebSocket, orchestrator: OrchestratorDep) -> None:
    """An SSH connection to the workspace `workspace` (query parameter), for `vmhost ssh-proxy`."""
    server = services_of(websocket).ssh
    ref = websocket.query_params.get("workspace") or ""

    def login(caller: Caller) -> Login:
        if not server.enabled:
            raise InvalidState("the SSH server is off on this daemon; an admin turns it on with ssh_bind "
                               "(VMHOST_SSH_BIND, e.g. 127.0.0.1:2222)")
        if not ref:
            raise InvalidInput("name the workspace: /ws/ssh?workspace=NAME")
        caller.require_write("open an SSH connection")
        workspace = orchestrator.get(caller, ref)
        return Login(caller, workspace.id, workspace.name, fingerprint=None)

    async with accepted_as(websocket, login) as resolved:
        if resolved is None:
            return
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        serving = asyncio.get_running_loop().create_task(server.serve(theirs, resolved))
        try:
            reader, writer = await asyncio.open_connection(sock=ours)
            await _pump(websocket, reader, writer)
        finally:
            ours.close()
            if not serving.done():
                serving.cancel()
            elif serving.exception() is not None:
                log.info("an SSH connection through ssh-proxy failed: %s", serving.exception())


async def _pump(websocket: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    async with anyio.create_task_group() as group:
        async def from_server() -> None:
            try:
                while data := await reader.read(CHUNK):
                    await websocket.send_bytes(data)
                await close_quietly(websocket, 1000, "the SSH connection ended")
            except (WebSocketDisconnect, OSError, RuntimeError):
                pass
            group.cancel_scope.cancel()

        group.start_soon(from_server)
        try:
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                if message.get("bytes"):
                    writer.write(message["bytes"])
                    await writer.drain()
        except (OSError, RuntimeError):
            pass
        writer.close()
        group.cancel_scope.cancel()
