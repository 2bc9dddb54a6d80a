"""The `vmhost` command. Thin: each command asks the daemon over HTTP and renders the answer.

Heavy modules (httpx, rich, the daemon) are imported inside the commands that need them, so the
CLI and shell completion start fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from vmhost.cli.durations import parse_duration
from vmhost.errors import InvalidInput, OperationFailed, VmhostError

if TYPE_CHECKING:
    from vmhost.cli.client import VmhostClient

app = typer.Typer(name="vmhost", help="Development workspaces on a shared Docker host.", no_args_is_help=True,
                  add_completion=True, pretty_exceptions_enable=False)
workspaces_app = typer.Typer(help="Create, list and act on workspaces.", no_args_is_help=True)
ops_app = typer.Typer(help="Follow asynchronous operations.", no_args_is_help=True)
templates_app = typer.Typer(help="Workspace templates.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens for TCP callers.", no_args_is_help=True)
config_app = typer.Typer(help="This machine's vmhost settings.", no_args_is_help=True)
app.add_typer(workspaces_app, name="workspaces")
app.add_typer(workspaces_app, name="ws", help="Alias of 'workspaces'.")
app.add_typer(ops_app, name="ops")
app.add_typer(templates_app, name="templates")
app.add_typer(tokens_app, name="tokens")
app.add_typer(config_app, name="config")

_connection: dict[str, Any] = {}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="Return at once; do not wait for the operation.")]
TimeoutOpt = Annotated[str, typer.Option("--timeout", help="How long to wait, e.g. 90s, 10m.")]
NameArg = Annotated[str, typer.Argument(help="Workspace name or id.")]


@app.callback()
def connection(
    url: Annotated[str | None, typer.Option("--url", envvar="VMHOST_URL",
                                            help="Daemon URL over TCP, e.g. http://127.0.0.1:3121.")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="VMHOST_TOKEN",
                                              help="API token for --url.")] = None,
    socket: Annotated[Path | None, typer.Option("--socket", envvar="VMHOST_SOCKET",
                                                help="Daemon's Unix socket.")] = None,
) -> None:
    _connection.update(url=url, token=token, socket=socket)


def fail(error: VmhostError) -> NoReturn:
    from vmhost.cli import render

    render.error_line(error.detail)
    raise typer.Exit(error.exit_code)


def run(action: Callable[[VmhostClient], Any]) -> Any:
    """Run `action` with a client; any VmhostError becomes one red line and its exit code."""
    from vmhost.cli.client import VmhostClient

    try:
        client = VmhostClient(**_connection)
    except VmhostError as exc:
        fail(exc)
    try:
        return action(client)
    except VmhostError as exc:
        fail(exc)
    finally:
        client.close()


def follow(client: VmhostClient, operation: dict[str, Any], what: str, timeout: str = "30m") -> dict[str, Any]:
    """Wait for an operation with a live status line, printing its output as it arrives."""
    from vmhost.cli.render import err

    printed = 0

    def show(update: dict[str, Any]) -> None:
        nonlocal printed
        new = update.get("output", "")[printed:]
        if new:
            err.print(new, markup=False, end="", highlight=False)
            printed += len(new)
        spinner.update(f"{what}: {update['status']}")

    with err.status(f"{what}: {operation['status']}") as spinner:
        done = client.wait(operation["id"], timeout=parse_duration(timeout), on_update=show)
    if done["status"] == "failed":
        raise OperationFailed(f"{what} failed: {done['error']}")
    if done["status"] != "succeeded":
        raise OperationFailed(f"{what} is still {done['status']} after {timeout}; "
                              f"follow it with 'vmhost ops wait {done['id']}'")
    return done


def key_values(pairs: list[str], what: str) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(InvalidInput(f"{what} {pair!r} must look like key=value"))
        result[key] = value
    return result


# -- workspaces ---------------------------------------------------------------------------------

@workspaces_app.command("ls")
def ws_ls(
    status: Annotated[str | None, typer.Option(help="Only workspaces with this status.")] = None,
    label: Annotated[list[str], typer.Option(help="Only workspaces with this label (key=value).")] = [],
    json: JsonOpt = False,
) -> None:
    """List workspaces."""
    items = run(lambda c: c.get("/workspaces", status=status, label=label or None))
    from vmhost.cli import render

    if json:
        render.print_json(items)
    else:
        render.workspaces(items, show_owner=len({w["owner"] for w in items}) > 1)


@workspaces_app.command("create")
def ws_create(
    name: Annotated[str, typer.Argument(help="A DNS label, unique among your workspaces.")],
    template: Annotated[str, typer.Option("--template", "-t", help="Template name (see 'vmhost templates ls').")]
    = "base",
    ttl: Annotated[str | None, typer.Option(help="Delete after this long, e.g. 2h, 7d.")] = None,
    label: Annotated[list[str], typer.Option(help="key=value; repeatable.")] = [],
    repo: Annotated[str | None, typer.Option(help="Git repository cloned into /workspace.")] = None,
    branch: Annotated[str | None, typer.Option(help="Branch of --repo.")] = None,
    cpus: Annotated[float | None, typer.Option(help="CPU cap.")] = None,
    memory: Annotated[int | None, typer.Option(help="Memory cap in MB.")] = None,
    provision: Annotated[list[str], typer.Option(help="Shell command run after start; repeatable.")] = [],
    plugin: Annotated[list[str], typer.Option(help="Plugin id; repeatable.")] = [],
    env: Annotated[list[str], typer.Option(help="KEY=VALUE; repeatable.")] = [],
    no_wait: NoWaitOpt = False,
    timeout: TimeoutOpt = "30m",
    json: JsonOpt = False,
) -> None:
    """Create a workspace from a template and wait until it runs."""
    body = {"name": name, "template": template, "labels": key_values(label, "label"),
            "env": key_values(env, "env"), "provision": provision, "plugins": plugin, "repo_url": repo,
            "branch": branch, "cpus": cpus, "memory_mb": memory,
            "ttl_seconds": int(parse_duration(ttl)) if ttl else None}

    def action(client: VmhostClient) -> dict[str, Any]:
        accepted = client.post("/workspaces", body)
        if not no_wait:
            follow(client, accepted["operation"], f"create {name}", timeout)
            return client.get(f"/workspaces/{accepted['workspace']['id']}")
        return accepted["workspace"]

    workspace = run(action)
    from vmhost.cli import render

    if json:
        render.print_json(workspace)
    else:
        render.workspace(workspace)


@workspaces_app.command("show")
def ws_show(name: NameArg, json: JsonOpt = False) -> None:
    """Show one workspace with its connection info."""
    workspace = run(lambda c: c.get(f"/workspaces/{name}"))
    from vmhost.cli import render

    render.print_json(workspace) if json else render.workspace(workspace)


def _lifecycle(name: str, action: str, no_wait: bool, timeout: str, json: bool) -> None:
    def act(client: VmhostClient) -> dict[str, Any]:
        if action == "delete":
            operation = client.delete(f"/workspaces/{name}")
        else:
            operation = client.post(f"/workspaces/{name}/actions/{action}")
        return operation if no_wait else follow(client, operation, f"{action} {name}", timeout)

    operation = run(act)
    from vmhost.cli import render

    if json:
        render.print_json(operation)
    elif no_wait:
        render.out.print(f"{action} {name}: operation {operation['id']} is {operation['status']}")
    else:
        render.out.print(f"{action} {name}: {render.status(operation['status'])}")


@workspaces_app.command("start")
def ws_start(name: NameArg, no_wait: NoWaitOpt = False, timeout: TimeoutOpt = "10m", json: JsonOpt = False) -> None:
    """Start a stopped workspace."""
    _lifecycle(name, "start", no_wait, timeout, json)


@workspaces_app.command("stop")
def ws_stop(name: NameArg, no_wait: NoWaitOpt = False, timeout: TimeoutOpt = "10m", json: JsonOpt = False) -> None:
    """Stop a workspace (its files stay)."""
    _lifecycle(name, "stop", no_wait, timeout, json)


@workspaces_app.command("restart")
def ws_restart(name: NameArg, no_wait: NoWaitOpt = False, timeout: TimeoutOpt = "10m", json: JsonOpt = False) -> None:
    """Restart a workspace."""
    _lifecycle(name, "restart", no_wait, timeout, json)


@workspaces_app.command("rm")
def ws_rm(name: NameArg, no_wait: NoWaitOpt = False, timeout: TimeoutOpt = "10m", json: JsonOpt = False) -> None:
    """Delete a workspace with its volume and snapshots."""
    _lifecycle(name, "delete", no_wait, timeout, json)


# -- operations ---------------------------------------------------------------------------------

@ops_app.command("ls")
def ops_ls(
    workspace: Annotated[str | None, typer.Option(help="Workspace name or id.")] = None,
    type: Annotated[str | None, typer.Option(help="create, start, stop, restart, delete, expire, ...")] = None,
    status: Annotated[str | None, typer.Option(help="pending, running, succeeded or failed.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    json: JsonOpt = False,
) -> None:
    """List operations, newest first."""
    items = run(lambda c: c.get("/operations", workspace_id=workspace, type=type, status=status, limit=limit))
    from vmhost.cli import render

    render.print_json(items) if json else render.operations(items)


@ops_app.command("show")
def ops_show(operation_id: str, json: JsonOpt = False) -> None:
    """Show an operation with its output."""
    operation = run(lambda c: c.get(f"/operations/{operation_id}"))
    from vmhost.cli import render

    render.print_json(operation) if json else render.operation(operation)


@ops_app.command("wait")
def ops_wait(operation_id: str, timeout: TimeoutOpt = "30m", json: JsonOpt = False) -> None:
    """Wait for an operation to end; exits non-zero if it failed."""
    def action(client: VmhostClient) -> dict[str, Any]:
        operation = client.get(f"/operations/{operation_id}")
        return follow(client, operation, f"{operation['type']} {operation['workspace_name'] or ''}".strip(), timeout)

    operation = run(action)
    from vmhost.cli import render

    render.print_json(operation) if json else render.operation(operation)


# -- templates ----------------------------------------------------------------------------------

@templates_app.command("ls")
def templates_ls(json: JsonOpt = False) -> None:
    """List the templates workspaces can be created from."""
    data = run(lambda c: c.get("/templates"))
    from vmhost.cli import render

    render.print_json(data) if json else render.templates(data)


# -- tokens -------------------------------------------------------------------------------------

@tokens_app.command("create")
def tokens_create(
    user: Annotated[str | None, typer.Option(help="Whose token (admins only for others). Default: you.")] = None,
    name: Annotated[str, typer.Option(help="A note to recognise it by.")] = "",
    scope: Annotated[str, typer.Option(help="read or write.")] = "write",
    admin: Annotated[bool, typer.Option("--admin", help="An admin token (admins only).")] = False,
    expires: Annotated[str | None, typer.Option(help="Expire after this long, e.g. 30d.")] = None,
    json: JsonOpt = False,
) -> None:
    """Create an API token. Prints the secret alone on stdout: TOKEN=$(vmhost tokens create --user alice)."""
    body = {"user": user, "name": name, "scope": scope, "admin": admin,
            "ttl_seconds": int(parse_duration(expires)) if expires else None}
    created = run(lambda c: c.post("/tokens", body))
    from vmhost.cli import render

    if json:
        render.print_json(created)
    else:
        sys.stdout.write(created["secret"] + "\n")
        render.err.print(f"token {created['token']['id']} for {created['token']['user']} "
                         f"({created['token']['scope']}); the secret is shown only once")


@tokens_app.command("ls")
def tokens_ls(json: JsonOpt = False) -> None:
    """List API tokens (never their secrets)."""
    items = run(lambda c: c.get("/tokens"))
    from vmhost.cli import render

    render.print_json(items) if json else render.tokens(items)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str, json: JsonOpt = False) -> None:
    """Revoke an API token at once."""
    token = run(lambda c: c.delete(f"/tokens/{token_id}"))
    from vmhost.cli import render

    render.print_json(token) if json else render.out.print(f"token {token['id']} revoked")


# -- local: config and daemon -------------------------------------------------------------------

def _settings(**overrides: Any) -> Any:
    from vmhost.config import Settings

    try:
        return Settings.load(overrides)
    except VmhostError as exc:
        fail(exc)


@config_app.command("show")
def config_show(json: JsonOpt = False) -> None:
    """Print every resolved setting and where it came from (flag, env, file or default)."""
    settings = _settings()
    from vmhost.cli import render

    rows = settings.described()
    if json:
        render.print_json({name: {"value": value, "source": source} for name, value, source in rows})
        return
    from rich.table import Table

    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("SETTING", "VALUE", "SOURCE"):
        table.add_column(column, overflow="fold")
    for name, value, source in rows:
        table.add_row(name, value or "-", source)
    render.out.print(table)
    render.out.print(f"config file: {settings.config_file or 'none'}")


@app.command("daemon")
def daemon(
    socket: Annotated[Path | None, typer.Option("--listen-socket", help="Unix socket to listen on.")] = None,
    bind: Annotated[str | None, typer.Option(help="TCP host:port to listen on ('' for none).")] = None,
    db: Annotated[Path | None, typer.Option(help="SQLite database file.")] = None,
    templates_dir: Annotated[Path | None, typer.Option(help="Directory of template files.")] = None,
) -> None:
    """Run the vmhost daemon in the foreground (systemd runs this)."""
    settings = _settings(socket=socket, bind=bind, db_path=db, templates_dir=templates_dir)
    from vmhost.daemon.serve import run as serve

    serve(settings)


def main() -> None:
    app()
