"""An interactive shell in a workspace over a WebSocket, and the container's output over HTTP.

Shell frames: binary both ways are terminal bytes; the client may send a text frame
`{"type": "resize", "cols": C, "rows": R}`; the server ends with a text frame
`{"type": "exit", "exit_code": N}` and closes (1000). A text frame it cannot use is answered with
`{"type": "error", "detail": ...}`. Docker's calls block, so each runs in a thread; the terminal's
reader holds one for the session's life (from `stream_limiter`, apart from the request pool).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import APIRouter, Query, Request, WebSocket
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketDisconnect

from vmhost.core.engines import LogStream, Terminal
from vmhost.core.models import Caller
from vmhost.core.sessions import SessionKind
from vmhost.core.terminal import check_terminal_size, open_shell, workspace_logs
from vmhost.daemon.deps import CallerDep, OrchestratorDep, StreamLimiterDep, TokenSessionsDep
from vmhost.daemon.revocation import LiveSessions
from vmhost.daemon.routes.common import API, errors
from vmhost.daemon.sessions import hold
from vmhost.daemon.websockets import accepted_as, close_with
from vmhost.errors import InvalidInput, VmhostError

router = APIRouter(tags=["workspaces"])


@router.websocket("/ws/workspaces/{ref}/shell")
async def shell_socket(websocket: WebSocket, ref: str, orchestrator: OrchestratorDep,
                       stream_limiter: StreamLimiterDep) -> None:
    """A TTY session in the workspace: its template's shell (else /bin/sh), or `argv` (repeatable query
    parameter) in `workdir` (default: the workspace's, e.g. its devcontainer.json's workspaceFolder; else
    /workspace). Needs a write scope and a running workspace."""
    argv = websocket.query_params.getlist("argv") or None
    workdir = websocket.query_params.get("workdir")
    async with accepted_as(websocket, lambda caller: open_shell(orchestrator, caller, ref, argv, workdir),
                           SessionKind.SHELL, release=lambda terminal: terminal.close()) as terminal:
        if terminal is None:
            return
        try:
            await _pump(websocket, terminal, stream_limiter)
        finally:
            await anyio.to_thread.run_sync(terminal.close)


async def _pump(websocket: WebSocket, terminal: Terminal, limiter: anyio.CapacityLimiter) -> None:
    """Terminal output to the client (read in a thread of `limiter`) and the client's keys and control
    frames to the terminal, until either side ends."""
    async with anyio.create_task_group() as group:
        async def output() -> None:
            try:
                while data := await anyio.to_thread.run_sync(terminal.read, limiter=limiter):
                    await websocket.send_bytes(data)
                try:
                    exit_code = await anyio.to_thread.run_sync(terminal.exit_code)
                except VmhostError as exc:  # e.g. the container was removed under the shell
                    await close_with(websocket, exc)
                else:
                    await websocket.send_text(json.dumps({"type": "exit", "exit_code": exit_code}))
                    await websocket.close(1000)
            except (WebSocketDisconnect, OSError, RuntimeError):
                pass  # the client left first
            group.cancel_scope.cancel()

        group.start_soon(output)
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes"):
                try:
                    await anyio.to_thread.run_sync(terminal.write, message["bytes"])
                except VmhostError:
                    pass  # the shell has just ended; its exit frame is on its way
            elif message.get("text"):
                await _control(websocket, terminal, message["text"])
        await anyio.to_thread.run_sync(terminal.close)  # wakes the reader
        group.cancel_scope.cancel()


async def _control(websocket: WebSocket, terminal: Terminal, text: str) -> None:
    try:
        try:
            request = json.loads(text)
        except ValueError:
            raise InvalidInput("a text frame must be JSON like {\"type\": \"resize\", \"cols\": 80, \"rows\": 24}") \
                from None
        if not isinstance(request, dict) or request.get("type") != "resize":
            raise InvalidInput("the only control frame is {\"type\": \"resize\", \"cols\": C, \"rows\": R}")
        cols, rows = check_terminal_size(request.get("cols"), request.get("rows"))
        await anyio.to_thread.run_sync(terminal.resize, cols, rows)
    except VmhostError as exc:
        await websocket.send_text(json.dumps({"type": "error", "detail": exc.detail, "code": exc.code}))


@router.get(f"{API}/workspaces/{{ref}}/logs", response_class=StreamingResponse, summary="A workspace's output",
            responses={**errors(404, 409, 429, 502, 503),
                       200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "the container's output"}},
            name="read_workspace_logs")
async def workspace_logs_route(ref: str, request: Request, caller: CallerDep, orchestrator: OrchestratorDep,
                               stream_limiter: StreamLimiterDep, token_sessions: TokenSessionsDep,
                               follow: Annotated[bool, Query(description="keep streaming new output")] = False,
                               tail: Annotated[int | None, Query(ge=0, le=1_000_000,
                                                                 description="only the last N lines")] = None,
                               ) -> StreamingResponse:
    """The container's stdout and stderr as plain text chunks; with `follow`, until the client leaves
    or the container stops. Each user may hold `user_max_log_streams` at once (429 past that)."""
    hold(request, caller, SessionKind.LOG_STREAM)
    logs = await anyio.to_thread.run_sync(workspace_logs, orchestrator, caller, ref, follow, tail)
    return StreamingResponse(_chunks(logs, stream_limiter, token_sessions, caller),
                             media_type="text/plain; charset=utf-8")


async def _chunks(logs: LogStream, limiter: anyio.CapacityLimiter, sessions: LiveSessions,
                  caller: Caller) -> AsyncIterator[bytes]:
    """The output; it ends early if the caller's token is revoked meanwhile."""
    chunks = iter(logs)
    try:
        async with sessions.hold(caller, lambda: anyio.to_thread.run_sync(logs.close)):
            while (chunk := await anyio.to_thread.run_sync(next, chunks, None, limiter=limiter,
                                                           abandon_on_cancel=True)) is not None:
                yield chunk
    finally:
        logs.close()  # ends a follow that is waiting for output
