"""Who is calling: peer credentials on the Unix socket; a bearer token, or a trusted proxy's
X-VM-User header, on TCP. Nothing else gets in."""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
from functools import lru_cache

from starlette.requests import HTTPConnection

from vmhost.config import Settings
from vmhost.core.models import Caller, Door
from vmhost.core.orchestrator import Orchestrator
from vmhost.daemon.audit import remember_caller
from vmhost.daemon.peercred import PEER_KEY
from vmhost.errors import Unauthenticated


@lru_cache(maxsize=1024)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


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


class Authenticator:
    def __init__(self, settings: Settings, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.admin_group = settings.admin_group
        self.trusted = [ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies]

    def is_trusted_proxy(self, host: str | None) -> bool:
        if host is None:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    def caller(self, conn: HTTPConnection) -> Caller:
        """Who is calling (raises Unauthenticated); remembered for the request's audit entry."""
        caller = self.identify(conn)
        remember_caller(conn.scope, caller)
        return caller

    def identify(self, conn: HTTPConnection) -> Caller:
        peer = conn.scope.get(PEER_KEY)
        if peer is not None:
            _, uid, _ = peer
            name = user_name(uid)
            admin = uid == 0 or uid == os.geteuid() or in_group(name, uid, self.admin_group)
            return Caller(user=name, admin=admin, door=Door.SOCKET, address="unix")
        host = conn.client.host if conn.client else None
        authorization = conn.headers.get("authorization", "")
        if authorization:
            scheme, _, secret = authorization.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise Unauthenticated("Authorization must be 'Bearer <token>'")
            return self.orchestrator.authenticate_token(secret.strip(), address=host)
        if conn.query_params.get("token"):  # browsers cannot set headers on a WebSocket
            return self.orchestrator.authenticate_token(conn.query_params["token"], address=host)
        user = conn.headers.get("x-vm-user")
        if user is not None:
            if not self.is_trusted_proxy(host):
                raise Unauthenticated(f"X-VM-User is only believed from a trusted proxy, and {host} is not one")
            user = user.strip()
            if not user or len(user) > 128 or any(c.isspace() or ord(c) < 32 for c in user):
                raise Unauthenticated("X-VM-User is empty or malformed")
            return Caller(user=user, door=Door.PROXY, address=host, email=conn.headers.get("x-vm-email"))
        raise Unauthenticated("authentication required: send 'Authorization: Bearer <token>' "
                              "(create one with 'vmhost tokens create') or use the Unix socket")
