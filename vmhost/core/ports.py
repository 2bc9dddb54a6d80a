"""A workspace's TCP ports: which ones listen inside its container, who may reach each one, and where
the daemon connects to reach it.

Listening ports are read from the container's own /proc/net/tcp and /proc/net/tcp6 (through the
engine's `run_command`, like every command in a container) and merged with the template's ports. A
socket bound to a loopback address only is left out: nothing outside the container reaches it. Each
port is `private` (its owner and admins) unless its owner shared it with every vmhost user
(`authenticated`); sharing lets others open a tunnel to that port, or its HTTP preview, and nothing else.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass

from vmhost.core.engines import Engine
from vmhost.core.models import Caller, Sharing, Workspace, WorkspaceStatus
from vmhost.core.port_relay import open_relay
from vmhost.core.store import Store
from vmhost.errors import ContainerNotRunning, InvalidInput, ProviderError, WorkspaceNotFound

LISTEN = "0A"  # the TCP_LISTEN state in /proc/net/tcp
PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")
READ_TIMEOUT = 10.0  # seconds for reading the socket tables in the container
MAX_TABLE_BYTES = 4 * 1024 * 1024  # about 25,000 sockets; a container with more is cut off there
MIN_PORT, MAX_PORT = 1, 65535


@dataclass(frozen=True)
class WorkspacePort:
    port: int
    listening: bool  # something listens on it now
    in_template: bool  # the template names it
    sharing: Sharing


@dataclass(frozen=True)
class PortTarget:
    """Where the daemon connects to reach `port` of `workspace` (for a tunnel, a preview or SSH): the
    container's address, or, where this host does not reach it (a Swarm node's container), 127.0.0.1 in
    the container through a relay command run there (`relay`, see vmhost.core.port_relay)."""

    workspace: Workspace
    host: str
    port: int
    # relay(timeout): a socket connected through the relay (it blocks while the relay starts); OSError when
    # nothing answers (ConnectionRefusedError) or not within `timeout` seconds (TimeoutError)
    relay: Callable[[float], socket.socket] | None = None


def listening_ports(table: str) -> set[int]:
    """The ports the sockets of a /proc/net/tcp or tcp6 table (one or several, concatenated) listen on,
    but for those bound to a loopback address only."""
    ports = set()
    for line in table.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[3] != LISTEN or ":" not in fields[1]:
            continue
        address, _, port = fields[1].partition(":")
        try:
            if not _loopback(address):
                ports.add(int(port, 16))
        except ValueError:
            continue  # a header line, or a line cut off at MAX_TABLE_BYTES
    return ports


def _loopback(address: str) -> bool:
    """Whether a /proc/net/tcp address (hex, each 32-bit word in host byte order: little-endian here) is
    a loopback address."""
    raw = bytes.fromhex(address)
    if len(raw) not in (4, 16):
        raise ValueError(address)
    packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(packed)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_port(port: int) -> int:
    if not MIN_PORT <= port <= MAX_PORT:
        raise InvalidInput(f"port {port} is not a TCP port; use one from {MIN_PORT} to {MAX_PORT}")
    return port


def template_ports(workspace: Workspace) -> set[int]:
    """The TCP ports the workspace's template names (`workspace.ports` keys look like "8080/tcp")."""
    ports = set()
    for key in workspace.ports:
        number, _, protocol = key.partition("/")
        if protocol in ("", "tcp") and number.isdigit():
            ports.add(int(number))
    return ports


class WorkspacePorts:
    """The ports of workspaces, for callers. `get(caller, ref)` finds a workspace the caller sees;
    `network_of(owner)` names the network an owner's containers are on; `on_traffic(workspace_id)` is
    called as bytes go through a tunnel (activity, for the idle stop: an in-memory write)."""

    def __init__(self, store: Store, engine: Engine, get: Callable[[Caller, str], Workspace],
                 network_of: Callable[[str], str], on_traffic: Callable[[str], None]) -> None:
        self.store = store
        self.engine = engine
        self._get = get
        self._network_of = network_of
        self.on_traffic = on_traffic

    def list(self, caller: Caller, ref: str) -> list[WorkspacePort]:
        """The ports that listen in the workspace (none when it is not running) and its template's."""
        workspace = self._get(caller, ref)
        listening = self._listening(workspace) if _running(workspace) else set()
        template = template_ports(workspace)
        sharing = self.store.port_sharing(workspace.id)
        return [WorkspacePort(port, port in listening, port in template, sharing.get(port, Sharing.PRIVATE))
                for port in sorted(listening | template | set(sharing))]

    def share(self, caller: Caller, ref: str, port: int, level: Sharing) -> WorkspacePort:
        """Set who may reach `port` of the workspace (its owner, or an admin, with a write scope)."""
        caller.require_write("change who may reach a port")
        check_port(port)
        workspace = self._get(caller, ref)
        self.store.set_port_sharing(workspace.id, port, level, caller.user)
        return WorkspacePort(port, False, port in template_ports(workspace), level)

    def tunnel_target(self, caller: Caller, ref: str, port: int) -> PortTarget:
        """Where to connect for a tunnel to `port` (see `target`). Needs a write scope."""
        caller.require_write("open a tunnel")
        return self.target(caller, ref, port)

    def target(self, caller: Caller, ref: str, port: int) -> PortTarget:
        """Where to connect to reach `port` of a running workspace: for the owner and admins, any port;
        for another user, a port shared with `authenticated` (by the workspace's id). Whoever calls this
        checks the scope its use needs (a tunnel or a preview request that changes things: write)."""
        workspace = self.reachable(caller, ref, port)
        container_id = workspace.running_container()
        host = self.engine.container_address(container_id, self._network_of(workspace.owner))
        if host is None:
            relay = functools.partial(open_relay, self.engine, container_id, port)
            return PortTarget(workspace, "127.0.0.1", port, relay)
        return PortTarget(workspace, host, port)

    def reachable(self, caller: Caller, ref: str, port: int) -> Workspace:
        """The workspace whose `port` the caller may reach, running or not: any port of their own (or, for
        an admin, anyone's), a port of another user's shared with `authenticated` (by its id); else
        WorkspaceNotFound."""
        check_port(port)
        try:
            return self._get(caller, ref)
        except WorkspaceNotFound:
            if ref.startswith("ws_") and self.store.port_sharing(ref).get(port) == Sharing.AUTHENTICATED:
                return self.store.get_workspace(ref)
            raise

    def _listening(self, workspace: Workspace) -> set[int]:
        assert workspace.container_id is not None
        output = bytearray()

        def collect(stream: str, chunk: bytes) -> None:
            if stream == "stdout" and len(output) < MAX_TABLE_BYTES:
                output.extend(chunk[:MAX_TABLE_BYTES - len(output)])

        # a table that does not exist (no IPv6) makes cat fail, the other one is still read
        try:
            outcome = self.engine.run_command(workspace.container_id, ["cat", *PROC_NET_TCP], on_output=collect,
                                              timeout=READ_TIMEOUT)
        except ContainerNotRunning:  # it stopped since the workspace was read: nothing listens
            return set()
        if outcome.error is not None or outcome.timed_out:
            raise ProviderError(f"could not read the listening ports of workspace {workspace.name!r}: "
                                f"{outcome.error or f'cat took more than {READ_TIMEOUT:.0f} s'}")
        return listening_ports(output.decode(errors="replace"))


def _running(workspace: Workspace) -> bool:
    return workspace.status == WorkspaceStatus.RUNNING and workspace.container_id is not None
