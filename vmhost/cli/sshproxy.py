"""vmhost ssh-proxy / config-ssh: `ssh NAME.vmhost` through the daemon's socket or API, with no SSH port.

`ssh-proxy HOST` is an ssh ProxyCommand: it carries its stdin and stdout over the `/ws/ssh` WebSocket
(vmhost.daemon.routes.ssh) to the daemon's SSH server, connected like every other command (the Unix socket
here, or --url and a token from elsewhere). `config-ssh` writes the `Host *.vmhost` block that uses it.
"""

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

import typer

from vmhost.cli.base import _connection, app, fail, run
from vmhost.errors import InvalidInput

if TYPE_CHECKING:
    from vmhost.cli.client import VmhostClient

CHUNK = 64 * 1024
DOMAIN = ".vmhost"
BEGIN = "# --- vmhost: begin ---"
END = "# --- vmhost: end ---"


def workspace_of(host: str) -> str:
    """The workspace a host alias names: `web.vmhost` -> `web` (a bare name is taken as it is)."""
    name = host[:-len(DOMAIN)] if host.lower().endswith(DOMAIN) else host
    if not name:
        raise InvalidInput(f"{host!r} names no workspace; use NAME{DOMAIN}")
    return name


@app.command("ssh-proxy")
def ssh_proxy(host: Annotated[str, typer.Argument(help=f"NAME{DOMAIN} (or NAME): the workspace.")]) -> None:
    """Relay stdin and stdout to the daemon's SSH server (an ssh ProxyCommand; see config-ssh)."""
    workspace = workspace_of(host)

    def action(client: "VmhostClient") -> None:
        import anyio

        anyio.run(_relay, client, workspace)

    run(action)


async def _relay(client: "VmhostClient", workspace: str) -> None:
    import anyio
    import anyio.to_thread
    import wsproto.events
    from httpx_ws import WebSocketDisconnect, WebSocketNetworkError

    closed: WebSocketDisconnect | None = None
    path = f"/ws/ssh?workspace={quote(workspace)}"
    async with client.async_http() as http, \
            client.async_websocket(http, path, max_message_size_bytes=4 * CHUNK) as ws:
        async with anyio.create_task_group() as group:
            async def from_stdin() -> None:
                # at the end of stdin the daemon's answer may still be on its way: the daemon closes
                while data := await anyio.to_thread.run_sync(os.read, 0, CHUNK, abandon_on_cancel=True):
                    await ws.send_bytes(data)

            group.start_soon(from_stdin)
            try:
                while True:
                    event = await ws.receive()
                    if isinstance(event, wsproto.events.BytesMessage):
                        await anyio.to_thread.run_sync(_write_all, bytes(event.data))
                    elif isinstance(event, wsproto.events.TextMessage):
                        print(f"vmhost: {event.data}", file=sys.stderr)
            except WebSocketDisconnect as exc:
                closed = exc
            except (WebSocketNetworkError, BrokenPipeError):
                pass
            group.cancel_scope.cancel()
    if closed is not None and closed.code != 1000:
        raise client.closed_error(closed.code, closed.reason or "")


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


def proxy_command() -> str:
    """How ssh runs ssh-proxy: this vmhost, with the connection given to it explicitly (never a token:
    that comes from VMHOST_TOKEN in ssh's environment)."""
    found = shutil.which("vmhost")
    argv = [found] if found else [sys.executable, "-m", "vmhost"]
    if _connection.get("url"):
        argv += ["--url", _connection["url"]]
    elif _connection.get("socket"):
        argv += ["--socket", str(_connection["socket"])]
    return shlex.join([*argv, "ssh-proxy"]) + " %h"


def ssh_block() -> str:
    return "\n".join([
        BEGIN,
        "# written by `vmhost config-ssh` (run it again to update, `vmhost config-ssh --remove` to remove)",
        f"Host *{DOMAIN}",
        f"    ProxyCommand {proxy_command()}",
        "    HostKeyAlias vmhost",  # one daemon, one host key, whichever workspace the alias names
        "    User vmhost",  # the daemon takes the workspace from the alias, not from the user name
        END,
    ]) + "\n"


def without_block(text: str) -> tuple[str, int]:
    """`text` without its vmhost block, and where the block began (its length when there was none)."""
    start = text.find(BEGIN)
    if start < 0:
        return text, len(text)
    end = text.find(END, start)
    if end < 0:
        raise InvalidInput(f"the vmhost block has a beginning ({BEGIN!r}) but no end ({END!r}); fix the file by hand")
    end = text.find("\n", end)
    return text[:start] + (text[end + 1:] if end >= 0 else ""), start


@app.command("config-ssh")
def config_ssh(
    remove: Annotated[bool, typer.Option("--remove", help="Remove the vmhost block.")] = False,
    file: Annotated[Path, typer.Option(help="The ssh config file.")] = Path("~/.ssh/config"),
) -> None:
    """Write (or update in place) a `Host *.vmhost` block in ~/.ssh/config, so that `ssh NAME.vmhost` and
    editors' Remote-SSH reach workspace NAME through the daemon. The rest of the file is left as it is."""
    path = file.expanduser()
    try:
        text = path.read_text() if path.exists() else ""
    except OSError as exc:
        fail(InvalidInput(f"cannot read {path}: {exc.strerror}"))
    try:
        rest, at = without_block(text)
    except InvalidInput as exc:
        fail(exc)
    if remove:
        updated = rest
    else:
        before, after = rest[:at], rest[at:]
        if before and not before.endswith("\n"):
            before += "\n"
        updated = before + ssh_block() + after
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(updated)
        path.chmod(0o600)
    except OSError as exc:
        fail(InvalidInput(f"cannot write {path}: {exc.strerror}"))
    from vmhost.cli import render

    render.out().print(f"{'removed the vmhost block from' if remove else 'wrote the vmhost block to'} {path}"
                       + ("" if remove else f"; try: ssh NAME{DOMAIN}"), highlight=False)
