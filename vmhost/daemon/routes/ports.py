"""A workspace's TCP ports: the list, who may reach each one, and a raw TCP tunnel over a WebSocket.

Tunnel frames: binary both ways are the connection's bytes; the client may send the text frame
`{"type": "eof"}` when it has nothing more to send (the daemon then shuts the connection's write side).
The daemon closes with 1000 once the workspace's side has closed the connection, and with 4408 after
`tunnel_idle_timeout` seconds with no byte either way. The daemon connects to the container's own
address (nothing is published on the host), reads from one side only as fast as the other side takes
it, and holds one WebSocket message or one read of `CHUNK` bytes per direction at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread
from fastapi import APIRouter, Path, Request, WebSocket
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect

from vmhost.core.models import Workspace
from vmhost.core.ports import MAX_PORT, MIN_PORT, WorkspacePort
from vmhost.core.sessions import SessionKind
from vmhost.daemon.deps import CallerDep, OrchestratorDep, SettingsDep
from vmhost.daemon.port_connections import connect
from vmhost.daemon.preview import Forwarding
from vmhost.daemon.preview_host import preview_url
from vmhost.daemon.routes.common import API, errors
from vmhost.daemon.schemas import Page, PortOut, PortSharingIn
from vmhost.daemon.services import services_of
from vmhost.daemon.websockets import IdleWatch, accepted_as, close_quietly, close_with
from vmhost.errors import InvalidInput, InvalidState, VmhostError

router = APIRouter(tags=["workspaces"])

CHUNK = 64 * 1024
CONNECT_TIMEOUT = 10.0

WEB_SCHEMES = {"ws": "http", "wss": "https"}

PortNumber = Annotated[int, Path(ge=MIN_PORT, le=MAX_PORT, description="a TCP port in the workspace")]


def preview_path(workspace_id: str, port: int) -> str:
    """Where a port's HTTP preview is served (vmhost.daemon.routes.preview)."""
    return f"{API}/workspaces/{workspace_id}/ports/{port}/proxy/"


def forwarding_of(conn: HTTPConnection) -> Forwarding:
    """Who a request came from and how it was addressed: a trusted proxy's X-Forwarded-* are kept (its
    peer added to the chain), anyone else's replaced."""
    peer = conn.client.host if conn.client else None  # None on the Unix socket
    headers = conn.headers
    scheme = WEB_SCHEMES.get(conn.url.scheme, conn.url.scheme)
    if services_of(conn).authenticator.is_trusted_proxy(peer):
        chain = [hop.strip() for value in headers.getlist("x-forwarded-for") for hop in value.split(",") if hop.strip()]
        return Forwarding([*chain, str(peer)], headers.get("x-forwarded-proto") or scheme,
                          headers.get("x-forwarded-host") or headers.get("host"))
    return Forwarding([peer] if peer else [], scheme, headers.get("host"))


def port_preview_url(request: Request, workspace: Workspace, port: int) -> str:
    """The port's preview on its own host name when there is one (`preview_domain`), else its path; with
    the scheme and port the caller used (as a trusted proxy says, behind one)."""
    addressed = forwarding_of(request)
    own_host = preview_url(services_of(request).settings.preview_domain, port, workspace, addressed.proto,
                           addressed.host)
    return own_host or preview_path(workspace.id, port)


def port_out(request: Request, workspace: Workspace, port: WorkspacePort) -> PortOut:
    return PortOut(port=port.port, listening=port.listening, in_template=port.in_template, sharing=port.sharing,
                   label=workspace.port_labels.get(str(port.port)),
                   preview_url=port_preview_url(request, workspace, port.port),
                   tunnel_url=f"/ws/workspaces/{workspace.id}/ports/{port.port}")


@router.get(f"{API}/workspaces/{{ref}}/ports", response_model=Page[PortOut], summary="A workspace's ports",
            responses=errors(404, 502, 503))
def list_ports(ref: str, request: Request, caller: CallerDep, orchestrator: OrchestratorDep) -> Page[PortOut]:
    """The TCP ports listening in the workspace (read inside its container; none when it is not
    running), its template's ports, and the ports shared beyond the owner, in one page."""
    workspace = orchestrator.get(caller, ref)
    ports = orchestrator.ports.list(caller, workspace.id)
    return Page[PortOut](items=[port_out(request, workspace, p) for p in ports], next_cursor=None)


@router.put(f"{API}/workspaces/{{ref}}/ports/{{port}}/sharing", response_model=PortOut,
            summary="Share a workspace's port", responses=errors(403, 404))
def share_port(ref: str, port: PortNumber, body: PortSharingIn, request: Request, caller: CallerDep,
               orchestrator: OrchestratorDep) -> PortOut:
    """Who may reach the port: `private` (the owner and admins) or `authenticated` (any vmhost user may
    open a tunnel to it, by the workspace's id; they see nothing else of the workspace)."""
    workspace = orchestrator.get(caller, ref)
    return port_out(request, workspace, orchestrator.ports.share(caller, workspace.id, port, body.level))


@router.websocket("/ws/workspaces/{ref}/ports/{port}")
async def tunnel_socket(websocket: WebSocket, ref: str, port: int, orchestrator: OrchestratorDep,
                        settings: SettingsDep) -> None:
    """A raw TCP connection to `port` in the workspace. Needs a write scope and a running workspace;
    the owner and admins reach any port, another user a port shared with `authenticated`."""
    pumping = anyio.CancelScope()  # cancelled, from a thread, when the caller's token is revoked
    async with accepted_as(websocket, lambda caller: orchestrator.ports.tunnel_target(caller, ref, port),
                           SessionKind.TUNNEL,
                           release=lambda _: anyio.from_thread.run_sync(pumping.cancel)) as target:
        if target is None:
            return
        try:
            stream = await connect(target, CONNECT_TIMEOUT)
        except OSError as exc:
            await close_with(websocket, InvalidState(f"nothing answers on port {target.port} in workspace "
                                                     f"{target.workspace.name!r} ({exc}); is a server listening "
                                                     "there on 0.0.0.0?"))
            return
        async with stream:
            with pumping:
                await _pump(websocket, stream, settings.tunnel_idle_timeout,
                            lambda: orchestrator.ports.on_traffic(target.workspace.id))


async def _pump(websocket: WebSocket, stream: anyio.abc.SocketStream, idle_timeout: float,
                on_traffic: Callable[[], None]) -> None:
    """Bytes both ways until either side closes or nothing moves for `idle_timeout` seconds."""
    idle = IdleWatch(idle_timeout, on_traffic)

    async with anyio.create_task_group() as group:
        async def from_workspace() -> None:
            try:
                while True:
                    data = await stream.receive(CHUNK)
                    idle.moved()
                    await websocket.send_bytes(data)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                await close_quietly(websocket, 1000, "the workspace closed the connection")
            except (WebSocketDisconnect, RuntimeError):
                pass  # the client left first
            group.cancel_scope.cancel()

        group.start_soon(from_workspace)
        group.start_soon(idle.close_when_idle, websocket, group.cancel_scope)
        try:
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                if message.get("bytes"):
                    idle.moved()
                    await stream.send(message["bytes"])  # waits while the workspace's side takes nothing
                elif message.get("text"):
                    await _control(websocket, stream, message["text"])
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            await close_quietly(websocket, 1000, "the workspace closed the connection")
        group.cancel_scope.cancel()


async def _control(websocket: WebSocket, stream: anyio.abc.SocketStream, text: str) -> None:
    try:
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict) or request.get("type") != "eof":
            raise InvalidInput("the only control frame of a tunnel is {\"type\": \"eof\"}; send the "
                               "connection's bytes as binary frames")
        await stream.send_eof()
    except VmhostError as exc:
        await websocket.send_text(json.dumps({"type": "error", "detail": exc.detail, "code": exc.code}))
