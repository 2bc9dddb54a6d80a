"""A port's HTTP preview: any request to `/api/v1/workspaces/{ref}/ports/{port}/proxy/{path}` is
forwarded to `http://<the container's address>:{port}/{path}?{query}` and the answer comes back.

Who may: like a tunnel (the owner and admins any port, another user a port shared `authenticated`,
by the workspace's id), but a read-only caller may GET and HEAD. Bodies stream both ways, one read
(at most 64 KiB) at a time, as fast as the other side takes them: a 50 MB download holds no more in
the daemon than a small page. Each user may have `user_max_preview_requests` requests in progress at
once (429 with Retry-After past that). The workspace's server has 5 s to accept the connection
(502 if nothing answers) and `preview_idle_timeout` seconds to answer, and then to send each next
part of its answer (504 before the answer starts; after that the answer is cut): there is no limit on
a whole answer, so server-sent events go on as long as they move. Revoking the caller's token cuts
its answers in progress. Each request counts as activity on the workspace (the idle stop), and each
part of an answer too. The audit log records the request that starts a preview session (a user's
first request to the port after 10 minutes without one), not every request.

A browser cannot add a token to the page's own requests: `POST .../preview-session` sets a cookie for
the preview's path (HttpOnly, SameSite=Strict, an hour) that stands for the caller there; a request
with other credentials (a token, the socket, a proxy's X-VM-User) is judged by those instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import anyio
import anyio.to_thread
import httpx
from fastapi import APIRouter, Depends, Request, Response, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect, HTTPConnection
from starlette.types import Receive, Scope, Send

from vmhost.core.models import Caller
from vmhost.core.ports import PortTarget
from vmhost.core.sessions import SessionKind
from vmhost.daemon.audit import preview_request, remember_caller, session_started
from vmhost.daemon.deps import CallerDep, OrchestratorDep, get_caller, in_read_pool, require_scope
from vmhost.daemon.peercred import PEER_KEY
from vmhost.daemon.port_connections import send_to
from vmhost.daemon.preview import (
    CONNECT_TIMEOUT,
    COOKIE_NAME,
    OWNERS_VIEW,
    cookie_values,
    downstream_headers,
    upstream_headers,
)
from vmhost.daemon.preview_host import HOST_KEY, HOST_REF, SESSION_PATH, workspace_of
from vmhost.daemon.preview_socket import open_upstream, relay, socket_headers
from vmhost.daemon.revocation import LiveSessions
from vmhost.daemon.routes.common import API, errors
from vmhost.daemon.routes.ports import PortNumber, forwarding_of, port_preview_url, preview_path
from vmhost.daemon.schemas import PreviewSessionOut
from vmhost.daemon.services import services_of
from vmhost.daemon.sessions import hold
from vmhost.daemon.websockets import close_code, close_quietly, close_with
from vmhost.errors import PortTimeout, PortUnreachable, Unauthenticated, VmhostError

router = APIRouter(tags=["workspaces"])

PROXY_PATH = rf"{API}/workspaces/[^/]+/ports/[0-9]+/proxy/.*"
"""Requests to this path may carry up to `max_upload_bytes` rather than `max_body_bytes`."""
PROXY_PATTERN = re.compile(PROXY_PATH, re.DOTALL)
PROXY = f"{API}/workspaces/{{ref}}/ports/{{port}}/proxy/{{path:path}}"
OTHER_METHODS = ["HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
OWN_CREDENTIALS = ("authorization", "x-vm-user")


async def workspace_ref(conn: HTTPConnection, ref: str) -> str:
    """How the preview names its workspace: `ref` from its path, or on a preview host the id of the
    workspace the host name names (vmhost.daemon.preview_host; WorkspaceNotFound if none)."""
    host = conn.scope.get(HOST_KEY)
    if host is None or ref != HOST_REF:
        return ref
    store = services_of(conn).orchestrator.store
    workspace_id = (await in_read_pool(conn, lambda: workspace_of(store, host))).id
    conn.scope["path_params"]["ref"] = workspace_id  # so the audit log names the workspace
    return workspace_id


async def preview_caller(request: HTTPConnection, ref: str, port: PortNumber) -> Caller:
    """Who calls: by the request's credentials like everywhere, or else by the port's preview cookie
    (which names the workspace by its id, as its path does). The query is the app's: a `?token=` in it
    is passed on, never read as a vmhost token (apps such as Jupyter have their own)."""
    cookies = cookie_values(request.headers.getlist("cookie"), COOKIE_NAME)
    if not cookies or request.scope.get(PEER_KEY) is not None or any(h in request.headers for h in OWN_CREDENTIALS):
        return await get_caller(HTTPConnection({**request.scope, "query_string": b""}))
    services = services_of(request)
    ref = await workspace_ref(request, ref)
    caller = services.previews.cookies.caller_of_any(cookies, ref, port,
                                                     request.client.host if request.client else None)
    if caller.token_id is not None and services.token_sessions.revoked(caller.token_id):
        raise Unauthenticated("this API token was revoked")
    remember_caller(request.scope, caller)
    return require_scope(request, caller)


def is_path_preview(scope: Scope) -> bool:
    """Whether a request is to a port's preview on the daemon's own origin (its path's)."""
    return HOST_KEY not in scope and PROXY_PATTERN.fullmatch(scope["path"]) is not None


def _upstream_target(scope: Scope) -> bytes:
    """The path after `/proxy` and the query, as the client sent them (not decoded and encoded again)."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    start = raw.find(b"/proxy/")
    target = raw[start + len(b"/proxy"):] if start >= 0 else b"/" + scope["path_params"]["path"].encode()
    query: bytes = scope.get("query_string") or b""
    return target + b"?" + query if query else target


def _has_body(request: Request) -> bool:
    return "content-length" in request.headers or "transfer-encoding" in request.headers


class ProxiedAnswer(StreamingResponse):
    """The workspace's answer, passed on one network read at a time as the client takes it. When the
    workspace's server stops sending for the idle timeout or fails, or the caller's token is revoked,
    the answer is cut (not completed: the client sees it was cut, and the connection is closed)."""

    def __init__(self, upstream: httpx.Response, on_traffic: Callable[[], None], sessions: LiveSessions,
                 caller: Caller) -> None:
        super().__init__(upstream.aiter_raw(), status_code=upstream.status_code)
        self.raw_headers = downstream_headers(upstream.headers.raw)
        self.upstream = upstream
        self.on_traffic = on_traffic
        self.sessions = sessions
        self.caller = caller
        self.cut = anyio.CancelScope()

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        with self.cut:
            try:
                async for chunk in self.body_iterator:
                    self.on_traffic()
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError:
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def revoked() -> None:
            self.cut.cancel()

        try:
            async with self.sessions.hold(self.caller, revoked):
                await super().__call__(scope, receive, send)
        finally:
            await self.upstream.aclose()


async def _send(request: Request, target: PortTarget) -> httpx.Response:
    """The workspace's answer to the request (its head; the body streams later)."""
    client = services_of(request).previews.client
    url = httpx.URL(scheme="http", host=target.host, port=target.port, raw_path=_upstream_target(request.scope))
    upstream = client.build_request(request.method, url, headers=upstream_headers(request.scope["headers"],
                                                                                  forwarding_of(request)),
                                    content=request.stream() if _has_body(request) else None)
    where = f"port {target.port} of workspace {target.workspace.name!r}"
    try:
        return await send_to(client, target, upstream)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise PortUnreachable(f"nothing answers on {where} ({exc}); is a server listening there on 0.0.0.0?") from exc
    except httpx.TimeoutException as exc:
        timeout = services_of(request).settings.preview_idle_timeout
        raise PortTimeout(f"the server on {where} did not answer within {timeout:g} s "
                          "(VMHOST_PREVIEW_IDLE_TIMEOUT)") from exc
    except httpx.TransportError as exc:
        raise PortUnreachable(f"the server on {where} did not answer HTTP: {exc or type(exc).__name__}") from exc


PreviewCallerDep = Annotated[Caller, Depends(preview_caller)]


async def preview(request: Request, ref: str, port: PortNumber, path: str, caller: PreviewCallerDep) -> Response:
    """Forwards the request to the port's server in the running workspace and streams its answer back
    (any method; GET and HEAD with a read scope, others need a write scope). The owner and admins reach
    any port, another user a port shared `authenticated` (by the workspace's id). 502 when nothing
    answers on the port, 504 when its server does not answer within `preview_idle_timeout`."""
    services = services_of(request)
    hold(request, caller, SessionKind.PREVIEW)
    ports = services.orchestrator.ports
    ref = await workspace_ref(request, ref)
    target = await anyio.to_thread.run_sync(ports.target, caller, ref, port)
    workspace_id = target.workspace.id
    request.scope.setdefault("state", {})[OWNERS_VIEW] = caller.user == target.workspace.owner
    ports.on_traffic(workspace_id)
    preview_request(request.scope, services.previews.sessions.starts(caller.user, workspace_id, port))
    try:
        upstream = await _send(request, target)
    except ClientDisconnect:
        return Response(status_code=400)  # the client went away while sending its body: nobody reads this
    return ProxiedAnswer(upstream, lambda: ports.on_traffic(workspace_id), services.token_sessions, caller)


_ANSWERS: dict[int | str, dict[str, Any]] = {
    **errors(403, 404, 409, 429, 502, 504),
    200: {"description": "the workspace's server's answer, whatever its status, headers and body"}}
router.add_api_route(PROXY, preview, methods=["GET"], summary="A port's HTTP preview", responses=_ANSWERS,
                     response_class=Response, name="preview")
router.add_api_route(PROXY, preview, methods=OTHER_METHODS, include_in_schema=False, response_class=Response,
                     name="preview_other_methods")


@router.websocket(PROXY)
async def preview_socket(websocket: WebSocket, ref: str, port: int, path: str) -> None:
    """A WebSocket to the port's server, relayed message by message (vmhost.daemon.preview_socket).
    Who may: as for the HTTP preview, but a WebSocket carries anything both ways, like a tunnel, so it
    needs a write scope. As on any preview, `?token=` is the app's (browsers use the preview's
    cookie). The daemon answers the upgrade only once the workspace's server
    has (with the subprotocol it chose); refusals close with 4000 + the HTTP status, as on every
    vmhost WebSocket (4502 when nothing answers or the server refuses the upgrade)."""
    services = services_of(websocket)
    ports = services.orchestrator.ports
    try:
        caller = await preview_caller(websocket, ref, port)
        caller.require_write("open a WebSocket through a preview")
        hold(websocket, caller, SessionKind.PREVIEW)
        ref = await workspace_ref(websocket, ref)
        target = await anyio.to_thread.run_sync(ports.target, caller, ref, port)
        ports.on_traffic(target.workspace.id)
        upstream = await open_upstream(target, _upstream_target(websocket.scope),
                                       socket_headers(websocket.scope["headers"], forwarding_of(websocket)),
                                       websocket.scope.get("subprotocols") or [], websocket.headers.get("user-agent"),
                                       services.settings.preview_idle_timeout)
    except VmhostError as exc:
        await websocket.accept()
        await close_with(websocket, exc)
        return
    cut = anyio.CancelScope()

    async def revoked() -> None:
        cut.cancel()
        await close_quietly(websocket, close_code(Unauthenticated("")), "this API token was revoked")

    try:
        await websocket.accept(subprotocol=upstream.subprotocol)
        await session_started(websocket.scope)
        async with services.token_sessions.hold(caller, revoked):
            with cut:
                await relay(websocket, upstream, services.settings.preview_idle_timeout,
                            lambda: ports.on_traffic(target.workspace.id))
    finally:
        with anyio.move_on_after(CONNECT_TIMEOUT, shield=True):
            await upstream.close()


@router.post(f"{API}/workspaces/{{ref}}/ports/{{port}}/preview-session", response_model=PreviewSessionOut,
             summary="A cookie for a port's preview in a browser", responses=errors(403, 404))
def start_preview_session(ref: str, port: PortNumber, request: Request, caller: CallerDep,
                          orchestrator: OrchestratorDep) -> Response:
    """What a browser opens to use the port's preview without a token in any URL. On the daemon's
    path: this answer sets a cookie (HttpOnly, SameSite=Strict, for the preview's path only, valid an
    hour or until the daemon restarts) that stands for the caller there, and `url` is that path. With
    `preview_domain`, `url` is a link on the port's own host, usable once within a minute, that sets
    that host's cookie (host-only, SameSite=Lax, an hour) and goes on to its `/`. The workspace may
    be running or not; who may reach the port is checked here and again at each request. Needs a
    write scope (a POST); the cookie carries the caller's scope and ends when the caller's token is
    revoked."""
    workspace = orchestrator.ports.reachable(caller, ref, port)
    cookies = services_of(request).previews.cookies
    own_host = port_preview_url(request, workspace, port)
    if own_host.startswith(("http://", "https://")):
        ticket = cookies.issue_ticket(caller, workspace.id, port, urlsplit(own_host).hostname or "")
        # the cookie itself is set on the preview's host (vmhost.daemon.preview_host)
        return JSONResponse({"url": f"{own_host.rstrip('/')}{SESSION_PATH}?{urlencode({'ticket': ticket})}"})
    path = preview_path(workspace.id, port)
    response = JSONResponse({"url": path})
    response.set_cookie(COOKIE_NAME, cookies.issue(caller, workspace.id, port), max_age=cookies.lifetime,
                        path=path, httponly=True, samesite="strict", secure=forwarding_of(request).proto == "https")
    return response
