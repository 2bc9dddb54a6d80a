"""vmhost nodes ls / set-engine: the hosts workspaces run on (admins)."""

from typing import Annotated

import typer

from vmhost.cli.base import JsonOpt, app, run

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
