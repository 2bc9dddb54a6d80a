"""Load for the fault tests, generated in processes of its own so that the test measures the daemon
rather than its own client. Each process runs asyncio clients and prints one JSON summary on stdout.

    python loadgen.py mixed --socket S --url U --token T --clients 25 --seconds 15 --shared ID,ID --seed 0
        clients listing, reading, creating, running commands and deleting, half over the socket, half
        over TCP (with the token), until the time is up
    python loadgen.py flood --url U --token T --workspace ID --operation ID --streams 160 --waits 270 --shells 40
        the token's user opening that many streamed commands (`sleep 60`), waits and shells at once;
        prints "holding" once each has been held or refused, holds what it got until its standard input
        closes, then prints the summary

Load goes only to loopback and the daemon's socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import ssl
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_ws import WebSocketDisconnect, aconnect_ws

TIMEOUT = 60
TLS = ssl.create_default_context()


@dataclass
class Summary:
    statuses: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    operation_ids: list[str] = field(default_factory=list)
    retry_after: set[str] = field(default_factory=set)

    def record(self, what: str, response: httpx.Response) -> None:
        self.statuses[f"{what} {response.status_code}"] += 1
        if response.status_code >= 500:
            self.server_errors.append(f"{what}: {response.status_code} {response.text[:300]}")
        elif response.status_code == 429:
            self.retry_after.add(response.headers.get("Retry-After", "missing"))
        elif response.status_code == 202:
            body = response.json()
            self.operation_ids.append(body["operation"]["id"] if "operation" in body else body["id"])

    def failed(self, what: str, exc: Exception) -> None:
        self.transport_errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def as_json(self) -> str:
        return json.dumps({"statuses": dict(self.statuses), "server_errors": self.server_errors,
                           "transport_errors": self.transport_errors, "operation_ids": self.operation_ids,
                           "retry_after": sorted(self.retry_after)})


def client_for(args: argparse.Namespace, over_socket: bool, **kwargs: Any) -> httpx.AsyncClient:
    # one TLS context for all: httpx loads the CA bundle for each client otherwise, about 0.15 s of CPU
    # each on a loaded 2-core machine, which made a test of 100 clients mostly a test of their start
    if over_socket:
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=args.socket, verify=TLS),
                                 base_url="http://vmhost", timeout=TIMEOUT, **kwargs)
    return httpx.AsyncClient(base_url=args.url, headers={"Authorization": f"Bearer {args.token}"}, verify=TLS,
                             timeout=TIMEOUT, **kwargs)


async def mixed_client(args: argparse.Namespace, number: int, deadline: float, summary: Summary) -> None:
    rng = random.Random(args.seed * 100_000 + number)
    shared: list[str] = args.shared.split(",")
    mine: list[str] = []
    loop = asyncio.get_running_loop()
    async with client_for(args, over_socket=number % 2 == 0) as client:
        while loop.time() < deadline:
            roll = rng.random()
            try:
                if roll < 0.35:
                    what, response = "list", await client.get("/api/v1/workspaces")
                elif roll < 0.6:
                    what, response = "get", await client.get(f"/api/v1/workspaces/{rng.choice(shared)}")
                elif roll < 0.7:
                    what, response = "exec", await client.post(f"/api/v1/workspaces/{rng.choice(shared)}/commands",
                                                               json={"argv": ["echo", f"client {number}"]})
                elif mine:
                    what, response = "delete", await client.delete(f"/api/v1/workspaces/{mine[0]}")
                    if response.status_code == 202:
                        mine.pop(0)
                elif roll < 0.73:
                    what, response = "create", await client.post(
                        "/api/v1/workspaces", json={"name": f"load-{uuid.uuid4().hex[:8]}", "template": "base"})
                    if response.status_code == 202:
                        mine.append(response.json()["workspace"]["id"])
                else:
                    what, response = "operations", await client.get("/api/v1/operations", params={"limit": 20})
            except httpx.TransportError as exc:
                summary.failed(f"client {number}", exc)
                continue
            summary.record(what, response)
            await asyncio.sleep(rng.uniform(0, 0.05))


async def mixed(args: argparse.Namespace) -> Summary:
    summary = Summary()
    deadline = asyncio.get_running_loop().time() + args.seconds
    await asyncio.gather(*(mixed_client(args, args.seed * args.clients + n, deadline, summary)
                           for n in range(args.clients)))
    return summary


async def flood(args: argparse.Namespace) -> Summary:
    """Open every session at once; hold those granted until stdin closes."""
    summary = Summary()
    definite = args.streams + args.shells  # each is either held or refused; a held wait never answers
    answered = 0
    settled, release = asyncio.Event(), asyncio.Event()

    def answer() -> None:
        nonlocal answered
        answered += 1
        if answered >= definite:
            settled.set()

    async with client_for(args, over_socket=False, limits=httpx.Limits(max_connections=None)) as client:
        async def stream() -> None:
            try:
                async with client.stream("POST", f"/api/v1/workspaces/{args.workspace}/commands", timeout=None,
                                         json={"argv": ["sleep", "60"], "stream": True,
                                               "timeout_seconds": 90}) as response:
                    if response.status_code != 200:
                        await response.aread()
                    summary.record("stream", response)
                    answer()
                    await release.wait()
            except httpx.TransportError as exc:
                summary.failed("stream", exc)
                answer()

        async def shell() -> None:
            try:
                async with aconnect_ws(f"/ws/workspaces/{args.workspace}/shell?argv=cat", client) as ws:
                    await ws.send_bytes(b"ping\n")
                    echoed = b""
                    while b"ping" not in echoed:
                        echoed += await ws.receive_bytes(timeout=TIMEOUT)
                    summary.statuses["shell held"] += 1
                    answer()
                    await release.wait()
            except Exception as exc:  # noqa: BLE001 - what the test reports
                closed = [e for e in _leaves(exc) if isinstance(e, WebSocketDisconnect)]
                if closed:  # refused: 4000 + the REST status
                    summary.statuses[f"shell {closed[0].code}"] += 1
                else:
                    summary.failed("shell", exc)
                answer()

        async def wait() -> None:
            try:
                response = await client.get(f"/api/v1/operations/{args.operation}/wait", params={"timeout": 120},
                                            timeout=None)
                summary.record("wait", response)
            except httpx.TransportError as exc:
                summary.failed("wait", exc)

        tasks = [asyncio.ensure_future(job()) for job in
                 (*[stream] * args.streams, *[shell] * args.shells, *[wait] * args.waits)]
        await asyncio.wait_for(settled.wait(), TIMEOUT)
        refused = -1
        while summary.statuses["wait 429"] != refused:  # until the waits refused stop changing for 2 s
            refused = summary.statuses["wait 429"]
            await asyncio.sleep(2)
        print("holding", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        release.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return summary


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside an exception group (httpx_ws raises its errors from a task group)."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["mixed", "flood"])
    parser.add_argument("--socket")
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--clients", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--shared", default="")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace")
    parser.add_argument("--operation")
    parser.add_argument("--streams", type=int, default=0)
    parser.add_argument("--waits", type=int, default=0)
    parser.add_argument("--shells", type=int, default=0)
    args = parser.parse_args()
    summary = asyncio.run(mixed(args) if args.mode == "mixed" else flood(args))
    print(summary.as_json(), flush=True)


if __name__ == "__main__":
    main()
