"""A small HTTP/1.1 load generator: `connections` kept-alive connections (TCP or a Unix socket), each
sending one GET after another for a while; the requests per second and each request's latency.
The same client drives vmhost and its floor, so their ratio does not depend on the client's cost."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Load:
    rate: float                  # requests per second, all connections together
    latencies: tuple[float, ...]  # milliseconds, one per request
    sent: int                    # requests, the warm-up's included

    @property
    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, int(0.99 * len(ordered)) - 1)] if ordered else float("nan")


@dataclass(frozen=True)
class Target:
    """Where to connect: a TCP port on 127.0.0.1, or a Unix socket."""

    port: int | None = None
    socket: Path | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.socket is not None:
            return await asyncio.open_unix_connection(str(self.socket))
        return await asyncio.open_connection("127.0.0.1", self.port)


async def _response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length framed); its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(target: Target, request: bytes, connections: int, warmup: float, seconds: float) -> Load:
    latencies: list[float] = []
    counted, sent = [0], [0]
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    end = start + seconds

    async def one() -> None:
        reader, writer = await target.connect()
        try:
            while (now := loop.time()) < end:
                began = time.perf_counter()
                writer.write(request)
                status = await _response(reader)
                if status != 200:
                    raise RuntimeError(f"answered {status}")
                sent[0] += 1
                if now >= start:
                    latencies.append((time.perf_counter() - began) * 1000)
                    counted[0] += 1
        finally:
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return Load(counted[0] / seconds, tuple(latencies), sent[0])


def hammer(target: Target, path: str, connections: int, seconds: float, token: str | None = None,
           warmup: float = 1.0) -> Load:
    """GET `path` over `connections` connections for `warmup` + `seconds` seconds; what the last
    `seconds` got through."""
    headers = [f"GET {path} HTTP/1.1", "Host: vmhost"] + ([f"Authorization: Bearer {token}"] if token else [])
    request = ("\r\n".join(headers) + "\r\n\r\n").encode()
    return asyncio.run(_run(target, request, connections, warmup, seconds))
