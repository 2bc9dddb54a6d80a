"""Who is calling: peer credentials on the Unix socket; a bearer token, or a trusted proxy's
X-VM-User header, on TCP. Nothing else gets in.

One namespace of user names serves every door: `alice` on the socket, behind the proxy and in her
token is one person, and every name passes `validation.check_user`. Admin power never comes from a
name, only from the door (socket uid 0, the daemon's own uid, `admin_group`) or an admin token. So
that no remote caller can be the host's own admins, a proxy may not name a system account of the
host (root, the daemon's user, uid below 1000, nobody). Trust in a proxy is decided on the
connection's real peer address (uvicorn's X-Forwarded-For rewriting is off)."""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
from functools import lru_cache

from starlette.requests import HTTPConnection

from vmhost.config import Settings
from vmhost.core import validation
from vmhost.core.models import Caller, Door
from vmhost.core.orchestrator import Orchestrator
from vmhost.daemon.audit import remember_caller, remember_forwarded_for
from vmhost.daemon.peercred import PEER_KEY
from vmhost.errors import InvalidInput, Unauthenticated

FIRST_USER_UID = 1000  # Debian's UID_MIN: below it, accounts of the system
NOBODY_UID = 65534
UNNAMED_PREFIX = "uid"  # a socket caller whose uid has no account is "uid<N>"
JUDGED_HOSTS = 4096  # peer addresses whose trust is remembered at once


@lru_cache(maxsize=1024)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"{UNNAMED_PREFIX}{uid}"


def in_group(user: str, uid: int, group: str | None) -> bool:
    if not group:
        return False
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    try:
        primary = pwd.getpwuid(uid).pw_gid
    except KeyError:
        primary = None
    return user in entry.gr_mem or primary == entry.gr_gid


def system_account_uid(name: str) -> int | None:
    """The uid of the host's system account that `name` names (in any letter case: 'Root' would read as
    root in a listing), else None."""
    for candidate in dict.fromkeys((name, name.lower())):
        try:
            uid = pwd.getpwnam(candidate).pw_uid
        except KeyError:
            continue
        if uid < FIRST_USER_UID or uid >= NOBODY_UID or uid == os.geteuid():
            return uid
    return None


def single_header(conn: HTTPConnection, name: str) -> str | None:
    """A header that names who is calling may come once: with two, which one counts would depend on
    who reads it."""
    values = conn.headers.getlist(name)
    if len(values) > 1:
        raise Unauthenticated(f"the {name} header was sent {len(values)} times; send it once")
    return values[0] if values else None


class Authenticator:
    def __init__(self, settings: Settings, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.admin_group = settings.admin_group
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]
        self._judged: dict[str, bool] = {}  # host: trusted? (parsing an address costs more than a request's auth)

    def is_trusted_proxy(self, host: str | None) -> bool:
        if host is None or not self.trusted:
            return False
        judged = self._judged.get(host)
        if judged is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            judged = any(address in network for network in self.trusted)
            if len(self._judged) >= JUDGED_HOSTS:  # bounded: many peers cost parsing again, not memory
                self._judged.clear()
            self._judged[host] = judged
        return judged

    def forwarded_for(self, conn: HTTPConnection) -> str | None:
        """The client a trusted proxy says it forwards: the right-most X-Forwarded-For address that is
        not itself a trusted proxy. None when the peer is not a trusted proxy or the header is unusable."""
        if conn.scope.get(PEER_KEY) is not None or not self.is_trusted_proxy(conn.client and conn.client.host):
            return None
        hops = [hop.strip() for value in conn.headers.getlist("x-forwarded-for") for hop in value.split(",")]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return None
            if not self.is_trusted_proxy(hop):
                return hop
        return None

    def asks_account_database(self, conn: HTTPConnection) -> bool:
        """Whether identifying this caller looks names up in the host's users and groups (beyond the cached
        uid -> name): a proxy user is checked against system accounts, a socket user against the admin group."""
        if conn.scope.get(PEER_KEY) is not None:
            return self.admin_group is not None
        return "authorization" not in conn.headers and "x-vm-user" in conn.headers

    def caller(self, conn: HTTPConnection) -> Caller:
        """Who is calling (raises Unauthenticated); remembered for the request's audit entry."""
        remember_forwarded_for(conn.scope, self.forwarded_for(conn))
        caller = self.identify(conn)
        remember_caller(conn.scope, caller)
        return caller

    def identify(self, conn: HTTPConnection) -> Caller:
        peer = conn.scope.get(PEER_KEY)
        if peer is not None:
            return self.socket_caller(peer[1])
        host = conn.client.host if conn.client else None  # the connection's peer: proxy headers are not applied
        secret = self.token_secret(conn)
        if secret is not None:
            return self.orchestrator.authenticate_token(secret, address=host)
        user = single_header(conn, "X-VM-User")
        email = single_header(conn, "X-VM-Email")
        if user is not None:
            if not self.is_trusted_proxy(host):
                raise Unauthenticated(f"X-VM-User is only believed from a trusted proxy, and {host} is not one")
            return Caller(user=self.proxy_user(user), door=Door.PROXY, address=host,
                          email=None if email is None else self.proxy_email(email))
        raise Unauthenticated("authentication required: send 'Authorization: Bearer <token>' "
                              "(create one with 'vmhost tokens create') or use the Unix socket")

    def socket_caller(self, uid: int) -> Caller:
        name = user_name(uid)
        try:
            validation.check_user(name)
        except InvalidInput as exc:
            raise Unauthenticated(f"the Unix account of uid {uid} cannot use vmhost: {exc.detail}") from None
        admin = uid == 0 or uid == os.geteuid() or in_group(name, uid, self.admin_group)
        return Caller(user=name, admin=admin, door=Door.SOCKET, address="unix")

    @staticmethod
    def token_secret(conn: HTTPConnection) -> str | None:
        """The bearer token of a TCP request: the Authorization header, or `?token=` on a WebSocket
        (browsers cannot set headers there; anywhere else a token in a URL only leaks into logs)."""
        in_url = conn.query_params.getlist("token") if conn.scope.get("query_string") else []
        if in_url and conn.scope["type"] != "websocket":
            raise Unauthenticated("a token in the URL (?token=) is accepted on WebSocket routes only; "
                                  "send 'Authorization: Bearer <token>'")
        if len(in_url) > 1:
            raise Unauthenticated(f"?token= was given {len(in_url)} times; give it once")
        authorization = single_header(conn, "Authorization")
        if authorization is not None:
            scheme, _, secret = authorization.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise Unauthenticated("Authorization must be 'Bearer <token>'")
            return secret.strip()
        return in_url[0] if in_url and in_url[0] else None

    @staticmethod
    def proxy_user(user: str) -> str:
        try:
            validation.check_user(user)
        except InvalidInput as exc:
            raise Unauthenticated(f"X-VM-User: {exc.detail}") from None
        uid = system_account_uid(user)
        if uid is not None:
            raise Unauthenticated(f"X-VM-User {user!r} is a system account of this host (uid {uid}); "
                                  "no one may be it through the proxy (use the Unix socket or an admin token)")
        if user.startswith(UNNAMED_PREFIX) and user.removeprefix(UNNAMED_PREFIX).isdigit():
            raise Unauthenticated(f"X-VM-User {user!r} is how the Unix socket names a uid without an account; "
                                  "no one may be it through the proxy")
        return user

    @staticmethod
    def proxy_email(email: str) -> str:
        try:
            return validation.check_email(email)
        except InvalidInput as exc:
            raise Unauthenticated(f"X-VM-Email: {exc.detail}") from None
