"""vmhost workspaces (alias ws): create, list, show and act on workspaces."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from vmhost.cli.base import (
    JsonOpt,
    NameArg,
    NoWaitOpt,
    TimeoutOpt,
    key_values,
    run,
    run_operation,
    settled,
    workspaces_app,
)
from vmhost.cli.durations import parse_duration
from vmhost.errors import VmhostError

if TYPE_CHECKING:
    from vmhost.cli.client import VmhostClient


@workspaces_app.command("ls")
def ws_ls(
    status: Annotated[str | None, typer.Option(help="Only workspaces with this status.")] = None,
    label: Annotated[list[str], typer.Option(help="Only workspaces with this label (key=value).")] = [],
    json: JsonOpt = False,
) -> None:
    """List workspaces."""
    items = run(lambda c: c.items("/workspaces", status=status, label=label or None))
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
    devcontainer: Annotated[bool, typer.Option(
        "--devcontainer", help="Apply the repository's devcontainer.json (needs --repo).")] = False,
    no_wait: NoWaitOpt = False,
    timeout: TimeoutOpt = "30m",
    json: JsonOpt = False,
) -> None:
    """Create a workspace from a template and wait until it runs."""
    body = {"name": name, "template": template, "labels": key_values(label, "label"), "devcontainer": devcontainer,
            "env": key_values(env, "env"), "provision": provision, "plugins": plugin, "repo_url": repo,
            "branch": branch, "cpus": cpus, "memory_mb": memory,
            "ttl_seconds": int(parse_duration(ttl)) if ttl else None}

    def action(client: "VmhostClient") -> dict[str, Any]:
        accepted = client.post("/workspaces", body)
        return settled(client, accepted["operation"], f"create {name}", timeout, no_wait,
                       f"/workspaces/{accepted['workspace']['id']}")

    workspace = run(action)
    from vmhost.cli import render

    if json:
        render.print_json(workspace)
    else:
        render.workspace(workspace)


@workspaces_app.command("show")
def ws_show(name: NameArg, json: JsonOpt = False) -> None:
    """Show one workspace with its connection info and, when it runs, the ports listening in it."""
    def show(client: "VmhostClient") -> tuple[dict[str, Any], str]:
        workspace = client.get(f"/workspaces/{name}")
        if json or workspace["status"] != "running":
            return workspace, "-"
        try:
            ports = client.get(f"/workspaces/{workspace['id']}/ports")["items"]
        except VmhostError as exc:  # the workspace is still worth showing
            return workspace, f"unknown ({exc.detail})"
        return workspace, ", ".join(f"{p['port']} ({p['sharing']})" for p in ports if p["listening"]) or "none"

    workspace, listening = run(show)
    from vmhost.cli import render

    render.print_json(workspace) if json else render.workspace(workspace, listening)


def _lifecycle(name: str, action: str, no_wait: bool, timeout: str, json: bool, force: bool = False) -> None:
    def act(client: "VmhostClient") -> dict[str, Any]:
        if action == "delete":
            return client.delete(f"/workspaces/{name}", force=force or None)
        return client.post(f"/workspaces/{name}/actions/{action}")

    done = run_operation(act, f"{action} {name}", no_wait, timeout, json)
    if done is not None:
        from vmhost.cli import render

        render.out().print(f"{action} {name}: {render.status(done['status'])}")


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
def ws_rm(
    name: NameArg,
    force: Annotated[bool, typer.Option("--force", help="Cancel whatever is in flight on it first; works in "
                                                        "any state.")] = False,
    no_wait: NoWaitOpt = False,
    timeout: TimeoutOpt = "10m",
    json: JsonOpt = False,
) -> None:
    """Delete a workspace with its volume and snapshots."""
    _lifecycle(name, "delete", no_wait, timeout, json, force=force)


@workspaces_app.command("rebuild")
def ws_rebuild(name: NameArg, no_wait: NoWaitOpt = False, timeout: TimeoutOpt = "30m", json: JsonOpt = False) -> None:
    """Recreate the container from the template's current image, keeping /workspace; provision again."""
    _lifecycle(name, "rebuild", no_wait, timeout, json)
