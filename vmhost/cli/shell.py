"""vmhost ws shell / ws logs: a terminal in a workspace, and its container's output."""

import json
import os
import select
import signal
import sys
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vmhost.cli.base import NameArg, run, workspaces_app
from vmhost.errors import DaemonUnreachable

if TYPE_CHECKING:
    from httpx_ws import WebSocketSession

    from vmhost.cli.client import VmhostClient

EOT = b"\x04"


class TerminalBridge:
    """Local terminal <-> the daemon's shell WebSocket. The local terminal is put in raw mode (when it
    is one) and always restored; window size changes are forwarded; the exit code is the shell's."""

    def __init__(self, ws: "WebSocketSession", client: "VmhostClient") -> None:
        self.ws = ws
        self.client = client
        self.stdin = sys.stdin.fileno()
        self.stdout = sys.stdout.fileno()
        self.exit_code: int | None = None
        self.error: Exception | None = None
        self._wake_read, self._wake_write = os.pipe()
        self._resized = False
        self._closed = threading.Event()

    def run(self) -> int:
        import termios
        import tty

        interactive = os.isatty(self.stdin)
        saved = termios.tcgetattr(self.stdin) if interactive else None
        previous_handler = signal.signal(signal.SIGWINCH, self._on_resize)
        try:
            if interactive:
                tty.setraw(self.stdin)
            self._send_size()
            receiver = threading.Thread(target=self._receive, name="vmhost-shell-receive", daemon=True)
            receiver.start()
            self._pump_input()
            receiver.join(5)
        finally:
            signal.signal(signal.SIGWINCH, previous_handler)
            if saved is not None:
                termios.tcsetattr(self.stdin, termios.TCSADRAIN, saved)
            os.close(self._wake_read)
            os.close(self._wake_write)
        if self.error is not None:
            raise self.error
        if self.exit_code is None:
            raise DaemonUnreachable("the shell's connection ended before the shell reported its exit code")
        return self.exit_code

    def _on_resize(self, signum: int, frame: Any) -> None:
        self._resized = True
        os.write(self._wake_write, b"r")

    def _send_size(self) -> None:
        if os.isatty(self.stdout):
            size = os.get_terminal_size(self.stdout)
            self.ws.send_text(json.dumps({"type": "resize", "cols": size.columns, "rows": size.lines}))

    def _pump_input(self) -> None:
        """Forward keystrokes until the session ends (stdin's end becomes one Ctrl-D)."""
        sources = [self.stdin, self._wake_read]
        while True:
            readable, _, _ = select.select(sources, [], [])
            if self._wake_read in readable:
                os.read(self._wake_read, 64)
                if self._resized:
                    self._resized = False
                    self._send_size()
            if self._closed.is_set():
                return
            if self.stdin in readable:
                data = os.read(self.stdin, 65536)
                if not data:
                    sources.remove(self.stdin)
                self.ws.send_bytes(data or EOT)

    def _receive(self) -> None:
        import wsproto.events
        from httpx_ws import WebSocketDisconnect, WebSocketNetworkError

        try:
            while True:
                event = self.ws.receive()
                if isinstance(event, wsproto.events.BytesMessage):
                    os.write(self.stdout, event.data)
                elif isinstance(event, wsproto.events.TextMessage):
                    message = json.loads(event.data)
                    if message.get("type") == "exit":
                        self.exit_code = message["exit_code"] if message["exit_code"] is not None else 1
                    elif message.get("type") == "error":
                        os.write(sys.stderr.fileno(), f"\r\nvmhost: {message['detail']}\r\n".encode())
        except WebSocketDisconnect as exc:
            if self.exit_code is None:
                self.error = self.client.closed_error(exc.code, exc.reason)
        except WebSocketNetworkError:
            if self.exit_code is None:
                self.error = DaemonUnreachable("lost the connection to the vmhost daemon")
        finally:
            self._closed.set()
            os.write(self._wake_write, b"x")


@workspaces_app.command("shell", context_settings={"allow_interspersed_args": False})
def ws_shell(
    name: NameArg,
    command: Annotated[list[str] | None, typer.Argument(help="Command to run instead of the workspace's shell.")]
    = None,
    workdir: Annotated[str | None, typer.Option(
        help="Directory to start in (default: the workspace's, else /workspace).")] = None,
) -> None:
    """Open an interactive shell in a workspace; exits with the shell's exit code."""
    def action(client: "VmhostClient") -> int:
        with client.websocket(f"/ws/workspaces/{name}/shell", argv=command or None, workdir=workdir) as ws:
            return TerminalBridge(ws, client).run()

    raise typer.Exit(run(action))


@workspaces_app.command("logs")
def ws_logs(
    name: NameArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new output.")] = False,
    lines: Annotated[int | None, typer.Option("--lines", "-n", help="Only the last N lines.")] = None,
) -> None:
    """Print the output of a workspace's container (its main process's stdout and stderr)."""
    def action(client: "VmhostClient") -> None:
        out = sys.stdout.buffer
        for chunk in client.chunks(f"/workspaces/{name}/logs", follow=str(follow).lower(), tail=lines):
            out.write(chunk)
            out.flush()

    try:
        run(action)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
