"""Cloning a workspace's repository, on the vmhost server.

git runs on the server, inside its network. For anyone but an admin a clone must not become a way
into that network: the repository's host is resolved first and every address must be public; git
is then pinned to those addresses (a second DNS answer cannot swap them), follows no redirect, and
a failure reads the same whatever the network answered (an open port and a closed one look alike).
Admins may clone from anywhere, the server's own disk included, and see git's own error.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import socket
import subprocess
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from vmhost.core.validation import repo_protocol
from vmhost.errors import ProviderError

CLONE_TIMEOUT = 600
DEFAULT_PORTS = {"http": 80, "https": 443, "git": 9418, "ssh": 22}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_scp_like = re.compile(r"^(?P<user>[\w.-]+)@(?P<host>[\w.-]+):(?P<path>.*)$")
_host_name = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class CloneRefused(Exception):
    """The repository's host is not a public address (or has none): nothing was sent to it."""


def is_public(address: Address) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local, shared (CGNAT),
    multicast, reserved or unspecified, also when it hides an IPv4 address in an IPv6 one."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if address in NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not (address.is_multicast or address.is_loopback or address.is_private
                                      or address.is_link_local or address.is_reserved or address.is_unspecified)


def public_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, when all of them are public; CloneRefused otherwise."""
    if not host or not (_host_name.match(host) or _literal(host)):
        raise CloneRefused(f"not a host name: {host!r}")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise CloneRefused(f"{host} does not resolve") from exc
    addresses = list(dict.fromkeys(str(info[4][0]).partition("%")[0] for info in found))
    if not addresses or not all(is_public(ipaddress.ip_address(a)) for a in addresses):
        raise CloneRefused(f"{host} resolves to an address that is not public")
    return addresses


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class PinnedClone:
    """How to run git so that it reaches only the addresses that were checked."""

    url: str
    config: tuple[str, ...] = ()  # `-c` values
    env: tuple[tuple[str, str], ...] = ()


def _bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def pin(repo_url: str) -> PinnedClone:
    """Resolve and check the repository's host, and pin git to what was checked (CloneRefused)."""
    scp = _scp_like.match(repo_url) if "://" not in repo_url else None
    if scp:
        host, port, scheme = scp["host"], DEFAULT_PORTS["ssh"], "ssh"
    else:
        parts = urlsplit(repo_url)
        scheme, host = parts.scheme, parts.hostname or ""
        try:
            port = parts.port or DEFAULT_PORTS.get(scheme, 0)
        except ValueError as exc:
            raise CloneRefused("bad port") from exc
        if scheme not in DEFAULT_PORTS:
            raise CloneRefused(f"{scheme}:// is for admins only")
    addresses = public_addresses(host, port)
    if scheme in ("http", "https"):
        if _literal(host):  # nothing to resolve again
            return PinnedClone(repo_url, ("http.followRedirects=false",))
        # curl connects to these addresses for this host and port, and still checks TLS for the name
        resolve = f"{host}:{port}:{','.join(_bracketed(a) for a in addresses)}"
        return PinnedClone(repo_url, ("http.followRedirects=false", f"http.curloptResolve={resolve}"))
    if scheme == "ssh":
        # never the daemon's own keys, agent or config: a user must not clone with the server's identity
        command = (f"ssh -F /dev/null -o BatchMode=yes -o PubkeyAuthentication=no -o IdentityAgent=none "
                   f"-o HostName={addresses[0]} -o HostKeyAlias={shlex.quote(host)}")
        return PinnedClone(repo_url, env=(("GIT_SSH_COMMAND", command),))
    parts = urlsplit(repo_url)  # git://: connect to the address itself
    netloc = _bracketed(addresses[0]) + (f":{parts.port}" if parts.port else "")
    return PinnedClone(urlunsplit(parts._replace(netloc=netloc)))


def clone(repo_url: str, branch: str | None, checkout: str, *, anywhere: bool) -> None:
    """`git clone --depth 1` into `checkout`. Without `anywhere`, only from a public address, and a
    failure says only that the repository could not be had (ProviderError)."""
    where = f"{repo_url}{' at branch ' + branch if branch else ''}"
    refused = ProviderError(
        f"cannot clone {where}: it could not be reached, or the repository or branch does not exist "
        "(without admin rights vmhost clones only from public network addresses and follows no redirects)")
    try:
        pinned = PinnedClone(repo_url) if anywhere else pin(repo_url)
    except CloneRefused:
        raise refused from None
    argv = ["git"] + [arg for value in pinned.config for arg in ("-c", value)]
    argv += ["clone", "--quiet", "--depth", "1"] + (["--branch", branch] if branch else [])
    argv += ["--", pinned.url, checkout]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", **dict(pinned.env),
           # only the protocol of the URL: no redirect to file:// or ext:: behind our back
           "GIT_ALLOW_PROTOCOL": repo_protocol(repo_url)}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=CLONE_TIMEOUT, env=env,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise ProviderError("git is not installed on the vmhost server") from exc
    except subprocess.TimeoutExpired as exc:
        if not anywhere:
            raise refused from None
        raise ProviderError(f"git clone of {repo_url} took longer than {CLONE_TIMEOUT} s") from exc
    if done.returncode != 0:
        if not anywhere:
            raise refused
        message = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProviderError(f"cannot clone {where}: {message}")
