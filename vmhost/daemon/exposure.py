"""How the daemon shows itself on the network: optional TLS on its TCP listeners (never on the Unix
socket), and a refusal to serve plain HTTP beyond loopback unless someone said so explicitly."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from typing import Any

import uvicorn

from vmhost.config import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def check_exposure(settings: Settings, tcp_hosts: list[str]) -> None:
    """Refuse (SystemExit, before anything listens) plain HTTP on a non-loopback address with neither TLS
    nor a trusted proxy in front, unless `allow_insecure_tcp` is set."""
    exposed = [host for host in tcp_hosts if not is_loopback(host)]
    if not exposed or settings.tls_cert or settings.trusted_proxies or settings.allow_insecure_tcp:
        return
    raise SystemExit(
        f"refusing to serve plain HTTP on {', '.join(exposed)}: API tokens would cross the network in clear text. "
        "Set VMHOST_TLS_CERT and VMHOST_TLS_KEY, or put an auth proxy in front (VMHOST_TRUSTED_PROXIES), "
        "or bind to 127.0.0.1; to serve it anyway set VMHOST_ALLOW_INSECURE_TCP=1 (or 'vmhost daemon --insecure')")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None and settings.tls_key is None:
        return None
    if settings.tls_cert is None:
        raise SystemExit("VMHOST_TLS_KEY is set but VMHOST_TLS_CERT is not; set both for TLS")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key) if settings.tls_key else None)
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"cannot load the TLS certificate {settings.tls_cert} "
                         f"(key {settings.tls_key or 'in the same file'}): {exc}") from exc
    return context


class Server(uvicorn.Server):
    """uvicorn.Server whose TCP listeners speak TLS when a context is given; the Unix socket stays plain
    (uvicorn's own `ssl_certfile` would wrap every socket handed to it, the Unix one included)."""

    def __init__(self, config: uvicorn.Config, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(config)
        self.tls = tls

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        sockets = sockets or []
        secured = [s for s in sockets if s.family != socket.AF_UNIX] if self.tls else []
        await super().startup(sockets=[s for s in sockets if s not in secured])
        if self.should_exit:
            return
        config = self.config

        protocol_class: Any = config.http_protocol_class  # uvicorn types it as a bare asyncio.Protocol

        def protocol() -> Any:
            return protocol_class(config=config, server_state=self.server_state,
                                              app_state=self.lifespan.state)

        loop = asyncio.get_running_loop()
        for sock in secured:
            self.servers.append(await loop.create_server(protocol, sock=sock, ssl=self.tls, backlog=config.backlog))
