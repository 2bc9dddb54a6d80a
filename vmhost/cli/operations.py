"""vmhost ops: follow asynchronous operations."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from vmhost.cli.base import JsonOpt, TimeoutOpt, follow, ops_app, run

if TYPE_CHECKING:
    from vmhost.cli.client import VmhostClient


@ops_app.command("ls")
def ops_ls(
    workspace: Annotated[str | None, typer.Option(help="Workspace name or id.")] = None,
    type: Annotated[str | None, typer.Option(help="create, start, stop, restart, delete, expire, ...")] = None,
    status: Annotated[str | None, typer.Option(help="pending, running, succeeded or failed.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    json: JsonOpt = False,
) -> None:
    """List operations, newest first."""
    items = run(lambda c: c.items("/operations", limit, workspace_id=workspace, type=type, status=status))
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
    def action(client: "VmhostClient") -> dict[str, Any]:
        operation = client.get(f"/operations/{operation_id}")
        return follow(client, operation, f"{operation['type']} {operation['workspace_name'] or ''}".strip(), timeout)

    operation = run(action)
    from vmhost.cli import render

    render.print_json(operation) if json else render.operation(operation)
