"""A workspace's port through the daemon against a direct connection to the container's address (what
the daemon itself connects to), in the same run: a large download and a small request's latency, through
the HTTP preview and through the raw TCP tunnel. Clients are on the daemon's Unix socket, as root."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
from websockets.sync.client import ClientConnection, unix_connect

from bench.cases import API, QUICK, Context, create_running, delete_workspaces
from bench.measure import Plan, Result, Summary, Target, paired

DOWNLOAD_MB = 50
SERVERS = (f"dd if=/dev/zero of=/workspace/big bs=1M count={DOWNLOAD_MB} 2>/dev/null; echo hi > /workspace/small; "
           "httpd -p 8080 -h /workspace")
SMALL_REQUEST = b"GET /small HTTP/1.0\r\n\r\n"
BIG_REQUEST = b"GET /big HTTP/1.0\r\n\r\n"
CHUNK = 256 * 1024


def container_address(ctx: Context, workspace_id: str) -> str:
    container = ctx.bench.docker.containers.get(f"vmhost-{workspace_id}")
    return next(n["IPAddress"] for n in container.attrs["NetworkSettings"]["Networks"].values() if n["IPAddress"])


def http_get(client: httpx.Client, url: str, size: int) -> Callable[[int], None]:
    def get(_: int) -> None:
        received = 0
        with client.stream("GET", url) as response:
            for chunk in response.iter_raw(CHUNK):
                received += len(chunk)
        if response.status_code != 200 or received != size:
            raise RuntimeError(f"GET {url} answered {response.status_code} with {received} bytes, not {size}")
    return get


def over_tcp(address: str, request: bytes, size: int) -> Callable[[int], None]:
    """One connection straight to the container: the request, then everything until the server closes."""
    def exchange(_: int) -> None:
        received = 0
        with socket.create_connection((address, 8080), timeout=60) as conn:
            conn.sendall(request)
            while chunk := conn.recv(CHUNK):
                received += len(chunk)
        if received < size:
            raise RuntimeError(f"received {received} bytes, fewer than {size}")
    return exchange


def over_tunnel(ctx: Context, workspace_id: str, request: bytes, size: int) -> Callable[[int], None]:
    """The same through a tunnel WebSocket (opened for each request, as port-forward does per connection)."""
    def exchange(_: int) -> None:
        received = 0
        connection: ClientConnection = unix_connect(str(ctx.daemon.socket),
                                                    f"ws://vmhost/ws/workspaces/{workspace_id}/ports/8080",
                                                    max_size=None)
        with connection:
            connection.send(request)
            try:
                for message in connection:
                    received += len(message)
            except Exception:  # noqa: BLE001  (the daemon's close after the server's end of stream)
                pass
        if received < size:
            raise RuntimeError(f"received {received} bytes through the tunnel, fewer than {size}")
    return exchange


def rates(summary: Summary, megabytes: int) -> Summary:
    return Summary(tuple(megabytes / (ms / 1000) for ms in summary.samples))


def port_traffic(ctx: Context) -> list[Result]:
    transfer = Plan(0, 1) if ctx.sizes is QUICK else Plan(1, 5)
    workspace = create_running(ctx.api, ctx.name("ports"))
    try:
        started = ctx.api.post(f"{API}/workspaces/{workspace['id']}/commands",
                               json={"argv": ["sh", "-c", SERVERS], "stream": True}, timeout=120)
        if '"exit_code": 0' not in started.text:
            raise RuntimeError(f"could not start the servers: {started.text[-300:]}")
        address = container_address(ctx, workspace["id"])
        big, small = DOWNLOAD_MB * 1024 * 1024, 3
        preview = f"{API}/workspaces/{workspace['id']}/ports/8080/proxy"
        with httpx.Client(base_url=f"http://{address}:8080", timeout=60, trust_env=False) as direct:
            preview_big, direct_big = paired(transfer, http_get(ctx.api, f"{preview}/big", big),
                                             http_get(direct, "/big", big))
            tunnel_big, tcp_big = paired(transfer, over_tunnel(ctx, workspace["id"], BIG_REQUEST, big),
                                         over_tcp(address, BIG_REQUEST, big))
            preview_small, direct_small = paired(ctx.sizes.plan, http_get(ctx.api, f"{preview}/small", small),
                                                 http_get(direct, "/small", small))
            tunnel_small, tcp_small = paired(ctx.sizes.plan, over_tunnel(ctx, workspace["id"], SMALL_REQUEST, small),
                                             over_tcp(address, SMALL_REQUEST, small))
    finally:
        delete_workspaces(ctx.api, [workspace["id"]])
    download = f"{DOWNLOAD_MB} MB download"
    return [
        Result(f"preview: {download}", "MB/s", rates(preview_big, DOWNLOAD_MB), rates(direct_big, DOWNLOAD_MB),
               "direct HTTP to the container", Target(min_ratio=0.2), note="httpx over the socket, streamed"),
        Result("preview: GET a small file", "ms", preview_small, direct_small, "direct HTTP to the container",
               Target(max_added=15), note="kept-alive client; the daemon opens a connection per request"),
        Result(f"tunnel: {download}", "MB/s", rates(tunnel_big, DOWNLOAD_MB), rates(tcp_big, DOWNLOAD_MB),
               "direct TCP to the container", Target(min_ratio=0.1),
               note="one WebSocket, binary frames of at most 64 KiB; the baseline is a kernel copy"),
        Result("tunnel: open + GET a small file", "ms", tunnel_small, tcp_small, "direct TCP connect + GET",
               Target(max_added=15), note="a new tunnel per request, as port-forward opens one per connection"),
    ]
