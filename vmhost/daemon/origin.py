"""A browser's cross-origin request may not change anything: behind an auth proxy that signs people in
with a cookie, any page they visit could otherwise POST to the API, or open a shell, in their name.

Every request that is not a read, and every WebSocket, whose `Origin` header names another host than
the one the request was sent to is refused with 403 (a WebSocket: closed with 4403). Requests without
an Origin (curl, the CLI, scripts) pass: browsers always send one on these requests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers

from vmhost.daemon.audit import READS
from vmhost.daemon.websockets import refuse
from vmhost.errors import Forbidden

Scope = dict[str, Any]
DEFAULT_PORTS = {"http": "80", "https": "443"}
MAX_SHOWN = 200


def authority(host: str, scheme: str) -> str:
    """host[:port] in lower case, without the scheme's default port."""
    host = host.strip().lower()
    default = DEFAULT_PORTS.get(scheme)
    return host.removesuffix(f":{default}") if default else host


def same_origin(origin: str, hosts: list[str]) -> bool:
    """Whether `origin` (scheme://host[:port]) names one of `hosts` (Host header values)."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in DEFAULT_PORTS or not parts.netloc:
        return False
    return authority(parts.netloc, parts.scheme) in {authority(h, parts.scheme) for h in hosts}


class SameOrigin:
    """`trusted_proxy(peer)` says whether the peer is a trusted proxy, whose X-Forwarded-Host also names
    this server (a proxy may rewrite Host)."""

    def __init__(self, app: Any, trusted_proxy: Callable[[str | None], bool]) -> None:
        self.app = app
        self.trusted_proxy = trusted_proxy

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        guarded = scope["type"] == "websocket" or (scope["type"] == "http" and scope["method"] not in READS)
        headers = Headers(scope=scope) if guarded else None
        origin = headers.get("origin") if headers is not None else None
        if headers is None or origin is None:
            await self.app(scope, receive, send)
            return
        hosts = headers.getlist("host")
        client = scope.get("client")
        if client and self.trusted_proxy(client[0]):
            hosts += [h.strip() for value in headers.getlist("x-forwarded-host") for h in value.split(",")]
        if same_origin(origin, hosts):
            await self.app(scope, receive, send)
            return
        error = Forbidden(f"cross-origin request refused: Origin {origin[:MAX_SHOWN]!r} is not this server "
                          f"({', '.join(hosts)[:MAX_SHOWN] or 'no Host header'}); a browser may change things "
                          "here only from the daemon's own page")
        await refuse(scope, receive, send, error)
