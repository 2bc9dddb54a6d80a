"""Commands run in a workspace: streamed while they run, or as an "exec" operation whose result holds
the exit code and the captured output.

A command is an argv list, never a shell line. Past its timeout, or when cancelled, it is killed with
every process it started. Its exit code is always known: 137 when killed, 127 when the program does
not exist, 126 when it cannot start, 125 when Docker could not run it at all.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from vmhost.core import validation
from vmhost.core.activity import Activity
from vmhost.core.channel import Channel
from vmhost.core.engines import CommandOutcome, Engine
from vmhost.core.models import (
    Caller,
    Operation,
    OperationType,
    Workspace,
)
from vmhost.core.operations import OperationQueue, new_operation, workspace_id_of
from vmhost.core.store import Store
from vmhost.errors import (
    InvalidInput,
    OperationFailed,
    ProviderError,
    VmhostError,
)

DEFAULT_TIMEOUT = 600
MAX_TIMEOUT = 24 * 3600
MAX_ARGS = 4096
MAX_CAPTURE = 1024 * 1024
DOCKER_FAILED = 125
STREAM_BUFFER = 256 * 1024


@dataclass
class CommandRequest:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None  # None: the workspace's (its devcontainer.json's workspaceFolder, else /workspace)
    timeout_seconds: float = DEFAULT_TIMEOUT
    stdin: str | None = None


def check_command(request: CommandRequest) -> CommandRequest:
    """The request with every field checked; InvalidInput naming the field otherwise."""
    argv = request.argv
    if (not isinstance(argv, list) or not argv or len(argv) > MAX_ARGS or not argv[0]
            or not all(isinstance(a, str) and "\x00" not in a for a in argv)):
        raise InvalidInput(f"argv must be a non-empty list of at most {MAX_ARGS} strings (the program, then its "
                           "arguments; no shell line), starting with the program's name")
    workdir = request.workdir
    if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/") or "\x00" in workdir
                                or len(workdir) > 4096):
        raise InvalidInput(f"workdir must be an absolute path inside the workspace, got {workdir!r}")
    timeout = request.timeout_seconds
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT:
        raise InvalidInput(f"timeout_seconds must be a number above 0 and at most {MAX_TIMEOUT}, got {timeout!r}")
    if request.stdin is not None and not isinstance(request.stdin, str):
        raise InvalidInput("stdin must be a string")
    return CommandRequest(argv=list(argv), env=validation.check_env(request.env), workdir=workdir,
                          timeout_seconds=timeout, stdin=request.stdin)


def ending(outcome: CommandOutcome) -> dict[str, Any]:
    """How a command ended, as the last line of a stream and in an operation's result."""
    end: dict[str, Any] = {"exit_code": outcome.exit_code, "timed_out": outcome.timed_out,
                           "cancelled": outcome.cancelled}
    if outcome.error:
        end["error"] = outcome.error
    return end


class _Capture:
    """The first MAX_CAPTURE bytes of one output stream."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = MAX_CAPTURE - len(self.data)
        self.data += chunk[:room]
        self.truncated = self.truncated or len(chunk) > room

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class CommandStream:
    """A running command's output as {"stream", "data"} items, then one ending item. At most
    STREAM_BUFFER bytes of output wait for a consumer: one that does not read holds the command at its
    next write. `close()`, from any thread, kills the command (the caller went away)."""

    def __init__(self, items: Channel[dict[str, Any] | None], cancel: threading.Event) -> None:
        self._items = items
        self._cancel = cancel

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while (item := await self._items.get()) is not None:
            yield item

    def cancel(self) -> None:
        """Kill the command; its output goes on to the ending item, which says it was cancelled."""
        self._cancel.set()

    def close(self) -> None:
        self._cancel.set()
        self._items.close()


class CommandRunner:
    """Runs commands in workspaces, streamed or as "exec" operations. `find(caller, ref)` is the workspace
    `ref` names for `caller` (Orchestrator.get). A command counts as activity on its workspace for as
    long as it runs (`activity`)."""

    def __init__(self, store: Store, engine: Engine, queue: OperationQueue,
                 find: Callable[[Caller, str], Workspace], activity: Activity | None = None) -> None:
        self.store = store
        self.engine = engine
        self.queue = queue
        self.find = find
        self.activity = activity

    def _target(self, caller: Caller, ref: str, request: CommandRequest) -> tuple[Workspace, str, CommandRequest]:
        """The workspace, its container's id and the checked request."""
        caller.require_write()
        request = check_command(request)
        workspace = self.find(caller, ref)
        request = replace(request, workdir=request.workdir or workspace.start_dir)
        return workspace, workspace.running_container("commands run only in a running workspace"), request

    def _execute(self, workspace: Workspace, container_id: str, request: CommandRequest,
                 on_output: Callable[[str, bytes], None], cancel: threading.Event) -> CommandOutcome:
        session = self.activity.session(workspace.id) if self.activity is not None else None
        try:
            outcome = self.engine.run_command(
                container_id, request.argv, on_output=on_output, env=request.env, workdir=request.workdir,
                stdin=None if request.stdin is None else request.stdin.encode(), timeout=request.timeout_seconds,
                cancel=cancel)
        finally:
            if session is not None:
                session.release()
        if outcome.error:
            on_output("stderr", f"vmhost: {outcome.error}\n".encode())
        return outcome

    # -- streamed -------------------------------------------------------------------------------

    def stream(self, caller: Caller, ref: str, request: CommandRequest) -> CommandStream:
        """Start the command at once (bad input and a workspace that is not running raise here) and
        answer its output as it comes."""
        workspace, container_id, request = self._target(caller, ref, request)
        items: Channel[dict[str, Any] | None] = Channel(STREAM_BUFFER)
        cancel = threading.Event()
        decoders = {name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in ("stdout", "stderr")}

        def emit(stream: str, chunk: bytes, final: bool = False) -> None:
            text = decoders[stream].decode(chunk, final)
            if text:
                items.put({"stream": stream, "data": text}, len(chunk))

        def work() -> None:
            try:
                outcome = self._execute(workspace, container_id, request, emit, cancel)
                for stream in decoders:
                    emit(stream, b"", final=True)
                items.put(ending(outcome))
            except VmhostError as exc:
                items.put({"exit_code": DOCKER_FAILED, "timed_out": False, "cancelled": False, "error": exc.detail})
            finally:
                items.put(None)

        threading.Thread(target=work, name=f"vmhost-exec-{workspace.name}", daemon=True).start()
        return CommandStream(items, cancel)

    # -- as an operation ------------------------------------------------------------------------

    def submit(self, caller: Caller, ref: str, request: CommandRequest) -> Operation:
        """Queue the command as an "exec" operation. It does not hold the workspace: lifecycle actions
        may run beside it."""
        workspace, _, request = self._target(caller, ref, request)
        operation = new_operation(caller, workspace, OperationType.EXEC, asdict(request))
        self.queue.add(operation, exclusive=False)
        if self.activity is not None:
            self.activity.touch(workspace.id)
        return operation

    def run_operation(self, operation: Operation) -> dict[str, Any]:
        """The "exec" operation's handler. Its result: exit_code, stdout, stderr (each at most
        MAX_CAPTURE bytes; `truncated` says whether any was cut), timed_out, cancelled."""
        request = CommandRequest(**operation.params)
        workspace = self.store.get_workspace(workspace_id_of(operation))
        if not workspace.container_id:
            raise ProviderError(f"workspace {workspace.name!r} has no container (status {workspace.status})")
        captured = {"stdout": _Capture(), "stderr": _Capture()}
        outcome = self._execute(workspace, workspace.container_id, request,
                                lambda stream, chunk: captured[stream].add(chunk),
                                self.queue.cancels.event(operation.id))
        reason = self.queue.cancels.reason(operation.id)
        result = {**ending(outcome), "stdout": captured["stdout"].text(), "stderr": captured["stderr"].text(),
                  "truncated": any(c.truncated for c in captured.values())}
        if outcome.timed_out:
            raise OperationFailed(f"the command ran longer than {request.timeout_seconds:g} s and was killed with "
                                  "all its processes", result=result)
        if outcome.cancelled:
            raise OperationFailed(reason, result=result)
        if outcome.error:
            raise OperationFailed(outcome.error, result=result)
        return result
