"""Interactive access to a workspace: a shell on a terminal, and the container's output.

The same rules as every other request: the caller must see the workspace (another user's is not
found), a shell needs a write scope, and the workspace must be running.
"""

from __future__ import annotations

import shlex

from vmhost.core.activity import ActivitySession
from vmhost.core.engines import LogStream, Terminal
from vmhost.core.models import Caller, Workspace
from vmhost.core.orchestrator import Orchestrator
from vmhost.errors import InvalidInput, InvalidState

DEFAULT_SHELL = "/bin/sh"
TERM = "xterm-256color"
MAX_TERMINAL_SIZE = 10_000


def _running(orchestrator: Orchestrator, caller: Caller, ref: str) -> tuple[Workspace, str]:
    """The workspace `ref` names and its container's id, when it runs."""
    workspace = orchestrator.get(caller, ref)
    return workspace, workspace.running_container()


def open_shell(orchestrator: Orchestrator, caller: Caller, ref: str, argv: list[str] | None = None,
               workdir: str | None = None) -> Terminal:
    """A terminal running `argv` (default: the workspace's shell from its template) in the workspace."""
    caller.require_write()
    workspace, container_id = _running(orchestrator, caller, ref)
    if argv is not None and (not argv or not argv[0] or any("\0" in a for a in argv)):
        raise InvalidInput("argv must be a non-empty list of arguments without NUL bytes")
    if workdir is not None and not workdir.startswith("/"):
        raise InvalidInput(f"workdir {workdir!r} must be an absolute path")
    terminal = orchestrator.engine.open_terminal(container_id, argv or attach_shell(workspace), env={"TERM": TERM},
                                                 workdir=workdir or workspace.start_dir)
    return ActiveTerminal(terminal, orchestrator.activity.session(workspace.id))


def attach_shell(workspace: Workspace) -> list[str]:
    """The argv of the shell a terminal opens on: the workspace's shell, after its devcontainer's
    postAttachCommand, which runs in that terminal (as editors run it when they attach)."""
    shell = workspace.shell or DEFAULT_SHELL
    if not workspace.post_attach:
        return [shell]
    script = "; ".join(c if isinstance(c, str) else shlex.join(c) for c in workspace.post_attach)
    return [shell, "-c", f"{script}; exec {shlex.quote(shell)}"]


class ActiveTerminal:
    """A terminal that keeps its workspace counted as active (for its idle stop) until it is closed."""

    def __init__(self, terminal: Terminal, session: ActivitySession) -> None:
        self.terminal = terminal
        self.session = session

    def read(self) -> bytes:
        return self.terminal.read()

    def write(self, data: bytes) -> None:
        self.terminal.write(data)

    def resize(self, cols: int, rows: int) -> None:
        self.terminal.resize(cols, rows)

    def exit_code(self) -> int | None:
        return self.terminal.exit_code()

    def close(self) -> None:
        try:
            self.terminal.close()
        finally:
            self.session.release()


def check_terminal_size(cols: object, rows: object) -> tuple[int, int]:
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_TERMINAL_SIZE for v in (cols, rows)):
        raise InvalidInput(f"a resize needs integer cols and rows between 1 and {MAX_TERMINAL_SIZE}")
    return cols, rows  # type: ignore[return-value]


def workspace_logs(orchestrator: Orchestrator, caller: Caller, ref: str, follow: bool = False,
                   tail: int | None = None) -> LogStream:
    """The workspace container's output (stdout and stderr), optionally following it."""
    workspace = orchestrator.get(caller, ref)
    if not workspace.container_id:
        raise InvalidState(f"workspace {workspace.name!r} has no container yet (status {workspace.status})")
    return orchestrator.engine.logs(workspace.container_id, follow=follow, tail=tail)
