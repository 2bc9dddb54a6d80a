"""Running a command in a workspace: streamed as newline-delimited JSON, or as an exec operation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from vmhost.core.commands import CommandRequest, CommandStream
from vmhost.core.models import Caller
from vmhost.core.sessions import SessionKind
from vmhost.daemon.deps import CallerDep, OrchestratorDep, TokenSessionsDep
from vmhost.daemon.revocation import LiveSessions
from vmhost.daemon.routes.common import API, errors, locate_operation
from vmhost.daemon.schemas import CommandEnd, CommandOutput, CommandRun, OperationOut
from vmhost.daemon.sessions import hold

router = APIRouter(prefix=f"{API}/workspaces", tags=["commands"])

NDJSON = "application/x-ndjson"


class StreamedCommand(StreamingResponse):
    """A streamed command's output, one JSON object a line, read without holding a thread. The command
    is killed when the answer ends for any reason (the client went away, the server stops, the caller's
    token is revoked)."""

    def __init__(self, stream: CommandStream, sessions: LiveSessions, caller: Caller) -> None:
        super().__init__(_lines(stream, sessions, caller), media_type=NDJSON)
        self.stream = stream

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.close()


async def _lines(stream: CommandStream, sessions: LiveSessions, caller: Caller) -> AsyncIterator[bytes]:
    async def revoked() -> None:
        stream.cancel()

    async with sessions.hold(caller, revoked):
        async for item in stream:
            yield json.dumps(item).encode() + b"\n"


@router.post("/{ref}/commands", status_code=202, response_model=OperationOut, summary="Run a command in a workspace",
             responses={**errors(403, 404, 409, 429),
                        200: {"description": "with `stream: true`: one JSON object per line, as the command "
                                             "writes, then its end",
                              "content": {NDJSON: {"schema": {"oneOf": [CommandOutput.model_json_schema(),
                                                                        CommandEnd.model_json_schema()]}}}}})
def run_command(ref: str, body: CommandRun, request: Request, response: Response, caller: CallerDep,
                orchestrator: OrchestratorDep, token_sessions: TokenSessionsDep) -> Any:
    """Runs `argv` (no shell) in the running workspace, as root, in `workdir`, with `env` added to the
    container's. Past `timeout_seconds` the command and every process it started are killed.

    With `stream: true` the answer (200, `application/x-ndjson`) is one line per chunk of output as the
    command writes it (`{"stream": "stdout", "data": "..."}`), then `{"exit_code": N, "timed_out": ...,
    "cancelled": ...}`; closing the connection kills the command. A client that reads slowly slows the
    command's output (it waits at its next write); each user may run `user_max_command_streams` such
    commands at once (429 with `Retry-After` past that). Otherwise the answer is 202 with an
    `exec` operation (it does not block lifecycle actions) whose result holds `exit_code`, `stdout` and
    `stderr` (each at most 1 MiB; `truncated` says whether one was cut), `timed_out` and `cancelled`.
    It succeeds when the command ran to its end, whatever its exit code; it fails when the command was
    killed (timeout, cancel) or could not run."""
    command = CommandRequest(argv=body.argv, env=body.env, workdir=body.workdir,
                             timeout_seconds=body.timeout_seconds, stdin=body.stdin)
    if body.stream:
        hold(request, caller, SessionKind.COMMAND_STREAM)
        stream = orchestrator.commands.stream(caller, ref, command)
        return StreamedCommand(stream, token_sessions, caller)
    operation = orchestrator.commands.submit(caller, ref, command)
    locate_operation(response, operation.id)
    return OperationOut.model_validate(operation)
