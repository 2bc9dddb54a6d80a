"""vmhost nodes ls / set-engine / drain / activate: the hosts workspaces run on (admins)."""

from typing import Annotated

import typer

from vmhost.cli.base import JsonOpt, NoWaitOpt, TimeoutOpt, app, run, run_operation
from vmhost.errors import Conflict

nodes_app = typer.Typer(help="The hosts workspaces run on: a Swarm cluster's nodes (admins).", no_args_is_help=True)
app.add_typer(nodes_app, name="nodes")

NodeArg = Annotated[str, typer.Argument(help="A node's id (or a unique prefix of it) or hostname.",
                                        show_default=False)]


@nodes_app.command("ls")
def nodes_ls(json: JsonOpt = False) -> None:
    """List the nodes: state, CPUs and memory in total and reserved, workspaces, engine."""
    nodes = run(lambda c: c.items("/nodes"))
    from vmhost.cli import render

    render.print_json(nodes) if json else render.nodes(nodes)


@nodes_app.command("set-engine")
def nodes_set_engine(node: NodeArg, url: Annotated[str, typer.Argument(
        help="unix:///path, tcp://host:port (with the docker_tls_* settings) or ssh://user@host",
        show_default=False)]) -> None:
    """Name the engine vmhost reaches a node's containers and volumes through (its vmhost.engine label)."""
    answer = run(lambda c: c.put(f"/nodes/{node}/engine", {"url": url}))
    from vmhost.cli import render

    render.out().print(f"node {answer['id'][:12]} ({answer['hostname']}): engine {answer['engine_url']}",
                       highlight=False)


@nodes_app.command("drain")
def nodes_drain(node: NodeArg, no_wait: NoWaitOpt = False, timeout: TimeoutOpt = "1h", json: JsonOpt = False) -> None:
    """Move every workspace off a node (with /workspace and its container's filesystem), then mark it drain.
    Exits 4 when a workspace stayed (no room elsewhere, or busy): the node is left paused then."""
    done = run_operation(lambda client: client.post(f"/nodes/{node}/actions/drain"), f"drain {node}", no_wait,
                         timeout, json)
    if done is not None:
        from vmhost.cli import render

        result = done["result"]
        render.out().print(f"drain {node}: {len(result['moved'])} moved, {len(result['stayed'])} stayed; "
                           f"node state {result['state']}", highlight=False)
        if result["stayed"]:  # its output said which and why; the node still holds them
            raise typer.Exit(Conflict.exit_code)


@nodes_app.command("activate")
def nodes_activate(node: NodeArg) -> None:
    """Let a drained node take workspaces again."""
    answer = run(lambda c: c.post(f"/nodes/{node}/actions/activate"))
    from vmhost.cli import render

    render.out().print(f"node {answer['id'][:12]} ({answer['hostname']}): {answer['state']}", highlight=False)
