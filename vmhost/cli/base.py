"""What every CLI command module shares: the Typer apps, connection options, the client runner,
error printing and operation following. Command modules register themselves on these apps."""

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
keys_app = typer.Typer(help="SSH public keys for logging in to workspaces.", no_args_is_help=True)
config_app = typer.Typer(help="This machine's vmhost settings.", no_args_is_help=True)
app.add_typer(workspaces_app, name="workspaces")
app.add_typer(ops_app, name="ops")
app.add_typer(templates_app, name="templates")
app.add_typer(tokens_app, name="tokens")
app.add_typer(keys_app, name="keys")
app.add_typer(config_app, name="config")

_connection: dict[str, Any] = {}

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
NoWaitOpt = Annotated[bool, typer.Option("--no-wait", help="Return at once; do not wait for the operation.")]
TimeoutOpt = Annotated[str, typer.Option("--timeout", help="How long to wait, e.g. 90s, 10m.")]


def complete_workspace_names(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of a workspace name, where vmhost.cli.completion's fast path did not answer."""
    from vmhost.cli.completion import workspace_names

    options = ctx.find_root().params
    return workspace_names(incomplete, options.get("url"), options.get("token"), options.get("socket"))


NameArg = Annotated[str, typer.Argument(help="Workspace name or id.", autocompletion=complete_workspace_names)]


@app.callback()
def connection(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option("--url", envvar="VMHOST_URL",
                                            help="Daemon URL over TCP, e.g. http://127.0.0.1:3121.")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="VMHOST_TOKEN",
                                              help="API token for --url.")] = None,
    socket: Annotated[Path | None, typer.Option("--socket", envvar="VMHOST_SOCKET",
                                                help="Daemon's Unix socket.")] = None,
) -> None:
    # whoever runs the commands in-process (tests) may hand an httpx transport in as the context's object
    _connection.update(url=url, token=token, socket=socket, transport=ctx.obj)


def fail(error: VmhostError) -> NoReturn:
    from vmhost.cli import render

    render.error_line(error.detail)
    raise typer.Exit(error.exit_code)


def run(action: Callable[["VmhostClient"], Any]) -> Any:
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


def run_operation(start: Callable[["VmhostClient"], dict[str, Any]], what: str, no_wait: bool, timeout: str,
                  json: bool) -> dict[str, Any] | None:
    """Start an operation, then follow it unless `no_wait`; print it as JSON, or with `no_wait` its id. The
    ended operation is answered when the caller is to say how it went (it waited, without JSON)."""
    def started(client: "VmhostClient") -> dict[str, Any]:
        operation = start(client)
        return operation if no_wait else follow(client, operation, what, timeout)

    operation = run(started)
    from vmhost.cli import render

    if json:
        render.print_json(operation)
    elif no_wait:
        render.out().print(f"{what}: operation {operation['id']} is {operation['status']}")
    else:
        return operation
    return None


def follow(client: "VmhostClient", operation: dict[str, Any], what: str, timeout: str = "30m") -> dict[str, Any]:
    """Wait for an operation with a live status line, printing its output as it arrives."""
    from vmhost.cli.render import err
    from vmhost.core.output import dropped_line, split_output

    printed = 0  # characters of the whole output, counting those the operation dropped

    def show(update: dict[str, Any]) -> None:
        nonlocal printed
        dropped, kept = split_output(update.get("output", ""))
        new = kept[max(0, printed - dropped):]
        if printed < dropped:
            new = dropped_line(dropped - printed) + new
        if new:
            err().print(new, markup=False, end="", highlight=False)
        printed = dropped + len(kept)
        spinner.update(f"{what}: {update['status']}")

    with err().status(f"{what}: {operation['status']}") as spinner:
        done = client.wait(operation["id"], timeout=parse_duration(timeout), on_update=show)
    if done["status"] == "failed":
        raise OperationFailed(f"{what} failed: {done['error']}")
    if done["status"] != "succeeded":
        raise OperationFailed(f"{what} is still {done['status']} after {timeout}; "
                              f"follow it with 'vmhost ops wait {done['id']}'")
    return done


def settled(client: "VmhostClient", operation: dict[str, Any], what: str, timeout: str, no_wait: bool,
            path: str) -> dict[str, Any]:
    """What `path` shows once `operation` has ended, followed live; with --no-wait, what it shows now."""
    if not no_wait:
        follow(client, operation, what, timeout)
    return client.get(path)


def key_values(pairs: list[str], what: str) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(InvalidInput(f"{what} {pair!r} must look like key=value"))
        result[key] = value
    return result
