"""vmhost ws snapshot: take, list, delete and restore snapshots of a workspace."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from vmhost.cli.base import JsonOpt, NameArg, NoWaitOpt, TimeoutOpt, run, settled, workspaces_app

if TYPE_CHECKING:
    from vmhost.cli.client import VmhostClient

snapshot_app = typer.Typer(help="Snapshots of a workspace: its container's filesystem and /workspace.",
                           no_args_is_help=True)
workspaces_app.add_typer(snapshot_app, name="snapshot")

SnapshotArg = Annotated[str, typer.Argument(help="Snapshot name or id.")]


@snapshot_app.command("create")
def snapshot_create(name: NameArg, snapshot: Annotated[str, typer.Argument(help="A name for the snapshot.")],
                    no_wait: NoWaitOpt = False, timeout: TimeoutOpt = "30m", json: JsonOpt = False) -> None:
    """Snapshot a workspace's filesystem and /workspace volume."""
    def action(client: "VmhostClient") -> dict[str, Any]:
        accepted = client.post(f"/workspaces/{name}/snapshots", {"name": snapshot})
        return settled(client, accepted["operation"], f"snapshot {name}", timeout, no_wait,
                       f"/workspaces/{name}/snapshots/{accepted['snapshot']['id']}")

    taken = run(action)
    from vmhost.cli import render

    if json:
        render.print_json(taken)
    else:
        render.out().print(f"snapshot {taken['name']} of {name}: {render.status(taken['status'])}"
                           f" ({render.size(taken['size_bytes'])})")


@snapshot_app.command("ls")
def snapshot_ls(name: NameArg, json: JsonOpt = False) -> None:
    """List a workspace's snapshots."""
    items = run(lambda c: c.items(f"/workspaces/{name}/snapshots"))
    from vmhost.cli import render

    render.print_json(items) if json else render.snapshots(items)


@snapshot_app.command("rm")
def snapshot_rm(name: NameArg, snapshot: SnapshotArg, json: JsonOpt = False) -> None:
    """Delete a snapshot (its image and its /workspace archive)."""
    deleted = run(lambda c: c.delete(f"/workspaces/{name}/snapshots/{snapshot}"))
    from vmhost.cli import render

    render.print_json(deleted) if json else render.out().print(f"deleted snapshot {deleted['name']} of {name}")


@snapshot_app.command("restore")
def snapshot_restore(
    name: NameArg,
    snapshot: SnapshotArg,
    as_new: Annotated[str | None, typer.Option("--as-new", help="Restore into a new workspace with this name, "
                                                                 "leaving this one alone.")] = None,
    no_wait: NoWaitOpt = False,
    timeout: TimeoutOpt = "30m",
    json: JsonOpt = False,
) -> None:
    """Bring a workspace back to a snapshot (files added since are gone), or make a new one from it."""
    def action(client: "VmhostClient") -> dict[str, Any]:
        accepted = client.post(f"/workspaces/{name}/snapshots/{snapshot}/restore",
                               {"as_new": as_new} if as_new else None)
        return settled(client, accepted["operation"], f"restore {as_new or name}", timeout, no_wait,
                       f"/workspaces/{accepted['workspace']['id']}")

    workspace = run(action)
    from vmhost.cli import render

    if json:
        render.print_json(workspace)
    else:
        render.out().print(f"restored {snapshot} into {workspace['name']}: {render.status(workspace['status'])}")
