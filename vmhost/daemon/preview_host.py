"""Previews on host names of their own: with `preview_domain` set, a request whose Host is
`{port}--{workspace}--{owner}.{preview_domain}` is that port's preview, its whole path passed on
(`/` is the app's `/`), as its own origin: the page gets no sandbox, keeps its own cookies and
storage, and none of the daemon's routes is reachable on such a host.

The middleware rewrites such a request into the port's preview path with the placeholder `HOST_REF`
for the workspace, and notes the host in the scope; the preview route then finds the workspace by
its owner and name (`workspace_of`). A browser gets its cookie there through a ticket: `POST
.../preview-session` answers the URL `{preview host}/SESSION_PATH?ticket=...`, which sets a host-only
cookie (never `Domain=`: one preview never sees another's) and redirects to `/`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi.responses import RedirectResponse
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection

from vmhost.core.models import Workspace
from vmhost.core.store import Store
from vmhost.daemon.preview import COOKIE_NAME, PreviewCookies
from vmhost.daemon.routes.common import API
from vmhost.daemon.websockets import refuse
from vmhost.errors import Unauthenticated, VmhostError, WorkspaceNotFound

HOST_KEY = "vmhost.preview_host"
HOST_REF = "~host"  # stands for the workspace the host names, in the rewritten path
SESSION_PATH = "/.vmhost/preview-session"
SEPARATOR = "--"
DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
PORT_PREFIX = re.compile(r"([0-9]{1,5})--(.+)")

Scope = dict[str, Any]


@dataclass(frozen=True)
class PreviewHost:
    """A preview host name, parsed: the port, and the rest (`{workspace}--{owner}`)."""

    name: str
    port: int
    rest: str


def preview_label(port: int, workspace: Workspace) -> str | None:
    """The first label of the port's preview host, or None when there cannot be one: the owner's name
    has a letter DNS does not (like '_' or '@'), the label would be too long, or the workspace's name
    holds '--' (the host name would be ambiguous). That port has its path preview only."""
    label = f"{port}{SEPARATOR}{workspace.name}{SEPARATOR}{workspace.owner}"
    return label if DNS_LABEL.fullmatch(label) and SEPARATOR not in workspace.name else None


def preview_url(domain: str, port: int, workspace: Workspace, scheme: str, authority: str | None) -> str | None:
    """The port's preview URL on its own host (None without `preview_domain` or for an owner whose
    name cannot be in a host name): the scheme and the port of the address the caller used."""
    label = preview_label(port, workspace)
    if not domain or label is None:
        return None
    server_port = urlsplit(f"//{authority}").port if authority else None
    return f"{scheme}://{label}.{domain}{f':{server_port}' if server_port else ''}/"


def parse_host(host: str | None, domain: str) -> PreviewHost | None:
    """The preview a Host header names, None when it names no host under `domain`."""
    if not host:
        return None
    name = (urlsplit(f"//{host}").hostname or "").rstrip(".")
    if not name.endswith(f".{domain}"):
        return None
    label = name[:-len(domain) - 1]
    matched = PORT_PREFIX.fullmatch(label)
    if matched is None or "." in label:
        return PreviewHost(name, 0, "")
    return PreviewHost(name, int(matched[1]), matched[2])


def workspace_of(store: Store, host: PreviewHost) -> Workspace:
    """The workspace a preview host names (`{workspace}--{owner}`: a workspace name with '--' in it has
    no preview host, so the first '--' ends the name; an owner's may hold '--')."""
    name, _, owner = host.rest.partition(SEPARATOR)
    found = store.find_workspace(owner, name) if name and owner else None
    if found is None:
        raise WorkspaceNotFound(f"no workspace for the preview host {host.name!r}: it names "
                                "{port}--{workspace}--{owner}, and there is no such workspace")
    return found


class PreviewHosts:
    """ASGI middleware: requests to a preview host become requests to its port's preview."""

    def __init__(self, app: Any, domain: str, cookies: PreviewCookies, https: Callable[[HTTPConnection], bool]) -> None:
        """`https(conn)`: whether the client asked over HTTPS (itself, or as a trusted proxy says)."""
        self.app = app
        self.domain = domain
        self.cookies = cookies
        self.https = https

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        host = (parse_host(Headers(scope=scope).get("host"), self.domain)
                if self.domain and scope["type"] in ("http", "websocket") else None)
        if host is None:
            await self.app(scope, receive, send)
            return
        try:
            if host.rest == "":
                raise WorkspaceNotFound(f"{host.name!r} is not a preview host: they are named "
                                        f"{{port}}--{{workspace}}--{{owner}}.{self.domain}")
            if scope["type"] == "http" and scope["path"] == SESSION_PATH:
                await self._start_session(scope, receive, send, host)
                return
        except VmhostError as exc:
            await refuse(scope, receive, send, exc)
            return
        prefix = f"{API}/workspaces/{HOST_REF}/ports/{host.port}/proxy"
        scope[HOST_KEY] = host
        scope["raw_path"] = prefix.encode() + (scope.get("raw_path") or scope["path"].encode())
        scope["path"] = prefix + scope["path"]
        await self.app(scope, receive, send)

    async def _start_session(self, scope: Scope, receive: Any, send: Any, host: PreviewHost) -> None:
        tickets = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("ticket", [])
        if len(tickets) != 1:
            raise Unauthenticated("a preview link carries one ticket; ask for a new one with POST "
                                  ".../preview-session")
        cookie = self.cookies.redeem(tickets[0], host.name)
        response = RedirectResponse("/", status_code=303)
        # host-only (no Domain), the whole host: it is this one preview's
        response.set_cookie(COOKIE_NAME, cookie, max_age=self.cookies.lifetime, path="/", httponly=True,
                            samesite="lax", secure=self.https(HTTPConnection(scope)))
        await response(scope, receive, send)
