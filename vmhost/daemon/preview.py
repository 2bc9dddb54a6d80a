"""What a port's HTTP preview needs beyond the route: the headers that cross it each way, the client
that forwards to workspaces, when a preview session starts (for the audit log), and the signed cookie
that lets a browser use one port's preview without a token.

Headers: hop-by-hop headers (Connection and those it names, Keep-Alive, Proxy-*, TE, Trailer,
Transfer-Encoding, Upgrade) are dropped both ways. Toward the workspace, vmhost's credentials are
dropped too (Authorization, every X-VM-* header and vmhost's own cookies), and so are incoming
X-Forwarded-* and Forwarded headers, replaced by the daemon's own: X-Forwarded-For (the chain a
trusted proxy sent, then the peer; just the peer from anyone else), X-Forwarded-Proto,
X-Forwarded-Host and one Forwarded header saying the same. The workspace's server gets its own
address as Host. Toward the client, the workspace's Date and Server are dropped (the daemon sends its
own); everything else (Set-Cookie, Content-Length, Content-Encoding, Location) passes unchanged.

The sandbox: a path preview is served on the daemon's own origin, where the daemon's web page keeps
its user's API token (in sessionStorage). So every answer there but the app's own to the workspace's
owner (the daemon's errors included) carries `Content-Security-Policy: sandbox ...` without
`allow-same-origin`: the browser gives the document an opaque origin, and its scripts can read nothing
of the daemon's origin nor call its API with the viewer's credentials. The owner's own app is not
sandboxed, so that it works in their browser (its assets, cookies and same-origin requests): it runs
code the owner chose, on the owner's credentials; `preview_domain` gives it an origin of its own. A
policy the app sends is kept, the sandbox is one more header (a browser enforces every policy it
gets, and of two sandbox directives the stricter flags: an app's `sandbox allow-same-origin` cannot
undo this one). A preview on its own host name
(`preview_domain`) is its own origin and gets no sandbox.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from vmhost.core.models import Caller, Door, Scope
from vmhost.errors import Unauthenticated

Headers = list[tuple[bytes, bytes]]

CONNECT_TIMEOUT = 5.0
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"})
CREDENTIALS = frozenset({b"authorization"})
VMHOST_HEADERS = b"x-vm-"  # X-VM-User, X-VM-Email: what a trusted proxy tells vmhost
REPLACED = frozenset({b"host", b"forwarded", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
DAEMON_OWN = frozenset({b"date", b"server"})
CSP = b"content-security-policy"
SANDBOX = b"sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
COOKIE_NAME = "vmhost_preview"
COOKIE_LIFETIME = 3600  # seconds
TICKET_LIFETIME = 60  # seconds
SESSION_GAP = 600.0  # seconds without a request after which the next one starts a new preview session
MAX_TRACKED_SESSIONS = 10_000


@dataclass(frozen=True)
class Forwarding:
    """Who a forwarded request came from, as the X-Forwarded-* headers say it."""

    chain: list[str]  # client addresses, the nearest last
    proto: str
    host: str | None


def _dropped_by_connection(headers: Headers) -> set[bytes]:
    """The hop-by-hop headers a message names in its Connection header."""
    return {token.strip().lower() for name, value in headers if name.lower() == b"connection"
            for token in value.split(b",") if token.strip()}


def _hop_by_hop(name: bytes, named: set[bytes]) -> bool:
    return name in HOP_BY_HOP or name.startswith(b"proxy-") or name in named


def cookie_values(headers: list[str], name: str) -> list[str]:
    """Every value of the cookies named `name` in Cookie headers, in their order."""
    return [value.strip() for header in headers for part in header.split(";")
            for key, sep, value in [part.partition("=")] if sep and key.strip() == name]


def without_vmhost_cookies(value: bytes) -> bytes:
    """A Cookie header's value without the cookies whose name starts with `vmhost`."""
    kept = [part.strip() for part in value.split(b";")
            if part.strip() and not part.strip().lower().startswith(b"vmhost")]
    return b"; ".join(kept)


def _forwarded_for(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return json.dumps(address)
    return f'"[{ip}]"' if ip.version == 6 else str(ip)


def upstream_headers(headers: Headers, forwarding: Forwarding) -> Headers:
    """The headers of a request as they go to the workspace's server (see the module's docstring)."""
    named = _dropped_by_connection(headers)
    kept: Headers = []
    for name, value in headers:
        lower = name.lower()
        if _hop_by_hop(lower, named) or lower in CREDENTIALS or lower.startswith(VMHOST_HEADERS) or lower in REPLACED:
            continue
        if lower == b"cookie":
            value = without_vmhost_cookies(value)
            if not value:
                continue
        kept.append((lower, value))
    if forwarding.chain:
        kept.append((b"x-forwarded-for", ", ".join(forwarding.chain).encode()))
    kept.append((b"x-forwarded-proto", forwarding.proto.encode()))
    element = [f"proto={forwarding.proto}"]
    if forwarding.host:
        kept.append((b"x-forwarded-host", forwarding.host.encode()))
        element.insert(0, f"host={json.dumps(forwarding.host)}")
    hops = [f"for={_forwarded_for(address)}" for address in forwarding.chain]
    last = ";".join(([hops.pop()] if hops else []) + element)
    kept.append((b"forwarded", ", ".join([*hops, last]).encode()))
    return kept


def downstream_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The headers of the workspace's answer as they go to the client (see the module's docstring)."""
    headers = list(headers)
    named = _dropped_by_connection(headers)
    return [(name.lower(), value) for name, value in headers
            if not _hop_by_hop(name.lower(), named) and name.lower() not in DAEMON_OWN]


OWNERS_VIEW = "vmhost_preview_owners_view"  # in an ASGI scope's state: the owner views their own port


def sandboxed(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """An answer's headers with the preview's sandbox policy added to the policies they already carry
    (see the module's docstring)."""
    return [*headers, (CSP, SANDBOX)]


class PreviewSandbox:
    """ASGI middleware: every answer to a request whose path `is_preview(scope)` says is a path
    preview's gets the sandbox policy (`sandboxed`), whoever made the answer, unless the route marked
    it the owner's view of their own port (`OWNERS_VIEW`)."""

    def __init__(self, app: Any, is_preview: Callable[[dict[str, Any]], bool]) -> None:
        self.app = app
        self.is_preview = is_preview

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.is_preview(scope):
            await self.app(scope, receive, send)
            return

        async def send_sandboxed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and not scope.get("state", {}).get(OWNERS_VIEW):
                message = {**message, "headers": sandboxed(message.get("headers", []))}
            await send(message)

        await self.app(scope, receive, send_sandboxed)


def preview_client(idle_timeout: float) -> httpx.AsyncClient:
    """The client that forwards preview requests: a connection of its own per request (a workspace's
    address may be another container's after a restart: no pooled connection outlives a request),
    `CONNECT_TIMEOUT` to connect, `idle_timeout` for each read and write (no limit on a whole answer:
    a stream of server-sent events lasts as long as it moves), no proxy from the environment, no
    redirects followed."""
    from vmhost.daemon.port_connections import PreviewTransport

    return httpx.AsyncClient(timeout=httpx.Timeout(idle_timeout, connect=CONNECT_TIMEOUT), transport=PreviewTransport(),
                             trust_env=False, follow_redirects=False)


class PreviewSessions:
    """When a preview session starts, for the audit log: a request of a user to a workspace's port after
    `gap` seconds without one starts a session (only that request is recorded, not every asset of every
    page). Bounded: past `max_tracked` (user, workspace, port) triples the longest quiet one is forgotten,
    so its next request is recorded as a new session."""

    def __init__(self, gap: float = SESSION_GAP, max_tracked: int = MAX_TRACKED_SESSIONS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gap = gap
        self.max_tracked = max_tracked
        self.clock = clock
        self._last: OrderedDict[tuple[str, str, int], float] = OrderedDict()

    def starts(self, user: str, workspace_id: str, port: int) -> bool:
        """Whether this request (now) starts a session; it counts as activity on the session either way."""
        key = (user, workspace_id, port)
        now = self.clock()
        last = self._last.pop(key, None)
        self._last[key] = now
        if len(self._last) > self.max_tracked:
            self._last.popitem(last=False)
        return last is None or now - last > self.gap


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PreviewCookies:
    """Signed cookies for one port's preview: the caller who asked (user, admin, door, scope, token),
    the workspace's id, the port and an expiry, signed with HMAC-SHA256 under a key made when the daemon
    starts (a restart ends every preview cookie: the browser asks for a new one).

    A ticket is the same, bound to one preview host name and valid `TICKET_LIFETIME` seconds, once: a
    browser opens it on that host (its URL is all it has) and gets a cookie of that host for it."""

    def __init__(self, lifetime: int = COOKIE_LIFETIME, key: bytes | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.lifetime = lifetime
        self._key = key or os.urandom(32)
        self.clock = clock
        self._redeemed: dict[str, float] = {}  # tickets' signatures, until they expire

    def _sign(self, payload: str) -> str:
        return _encode(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, caller: Caller, workspace_id: str, port: int) -> str:
        return self._issue(caller, workspace_id, port, self.lifetime, {})

    def issue_ticket(self, caller: Caller, workspace_id: str, port: int, host: str) -> str:
        # the nonce: two links asked for in the same second are two tickets, each usable once
        return self._issue(caller, workspace_id, port, TICKET_LIFETIME, {"h": host, "n": os.urandom(6).hex()})

    def _issue(self, caller: Caller, workspace_id: str, port: int, lifetime: int, extra: dict[str, str]) -> str:
        payload = _encode(json.dumps({"u": caller.user, "a": caller.admin, "d": caller.door.value,
                                      "s": caller.scope.value, "t": caller.token_id, "w": workspace_id,
                                      "p": port, "e": int(self.clock()) + lifetime, **extra}).encode())
        return f"{payload}.{self._sign(payload)}"

    def _open(self, value: str, what: str) -> dict[str, Any]:
        payload, _, signature = value.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            raise Unauthenticated(f"the preview {what} is not valid (the daemon restarted?); ask for a new one "
                                  "with POST .../preview-session")
        data: dict[str, Any] = json.loads(_decode(payload))
        if data["e"] < self.clock():
            raise Unauthenticated(f"the preview {what} has expired; ask for a new one with POST .../preview-session")
        return data

    def caller(self, value: str, workspace_id: str, port: int, address: str | None) -> Caller:
        """The caller a cookie stands for on `port` of `workspace_id` (Unauthenticated if it is not one
        this daemon signed for that port, or it has expired)."""
        data = self._open(value, "cookie")
        if data["w"] != workspace_id or data["p"] != port or "h" in data:
            raise Unauthenticated("this preview cookie is for another port's preview")
        return Caller(user=data["u"], admin=data["a"], door=Door(data["d"]), address=address,
                      scope=Scope(data["s"]), token_id=data["t"])

    def caller_of_any(self, values: list[str], workspace_id: str, port: int, address: str | None) -> Caller:
        """The caller of the first of several cookies of the same name that is valid here: on a
        `preview_domain`, an app may set one for the whole domain that reaches its sibling previews
        beside their own (which would otherwise lock their users out)."""
        refused = Unauthenticated("no preview cookie; ask for one with POST .../preview-session")
        for value in values:
            try:
                return self.caller(value, workspace_id, port, address)
            except Unauthenticated as exc:
                refused = exc
        raise refused

    def redeem(self, ticket: str, host: str) -> str:
        """A cookie for the preview a ticket was issued for, if it was issued for `host` and has not been
        used (Unauthenticated otherwise)."""
        data = self._open(ticket, "link")
        if data.get("h") != host:
            raise Unauthenticated("this preview link is for another preview")
        now = self.clock()
        self._redeemed = {signature: expiry for signature, expiry in self._redeemed.items() if expiry >= now}
        signature = ticket.partition(".")[2]
        if signature in self._redeemed:
            raise Unauthenticated("this preview link has been used; ask for a new one with POST .../preview-session")
        self._redeemed[signature] = data["e"]
        caller = Caller(user=data["u"], admin=data["a"], door=Door(data["d"]), scope=Scope(data["s"]),
                        token_id=data["t"])
        return self.issue(caller, data["w"], data["p"])


@dataclass
class Previews:
    """The daemon's preview parts, made once (see vmhost.daemon.services)."""

    idle_timeout: float
    sessions: PreviewSessions = field(default_factory=PreviewSessions)
    cookies: PreviewCookies = field(default_factory=PreviewCookies)
    client: httpx.AsyncClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = preview_client(self.idle_timeout)
