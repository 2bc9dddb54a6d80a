"""vmhost ws ports / ws port-forward: a workspace's ports, who may reach them, and local connections
tunnelled to them."""

from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from vmhost.cli.base import JsonOpt, NameArg, run, workspaces_app

if TYPE_CHECKING:
    from vmhost.cli.client import VmhostClient
    from vmhost.cli.forward import Forward


class PortsGroup(TyperGroup):
    """`ws ports NAME` lists (it is `ws ports ls NAME`); `ws ports share NAME PORT` shares."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:  # ctx: click's Context
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args.insert(0, "ls")
        return super().resolve_command(ctx, args)


ports_app = typer.Typer(cls=PortsGroup, no_args_is_help=True,
                        help="A workspace's TCP ports: `vmhost ws ports NAME` lists them.")
workspaces_app.add_typer(ports_app, name="ports")

PortArg = Annotated[int, typer.Argument(help="A TCP port in the workspace.", min=1, max=65535)]


@ports_app.command("ls")
def ports_ls(name: NameArg, json: JsonOpt = False) -> None:
    """List the ports listening in a workspace, its template's ports, and who may reach each one."""
    ports, base_url = run(lambda c: (c.get(f"/workspaces/{name}/ports")["items"],
                                     None if c.uds else str(c.http.base_url).rstrip("/")))
    from vmhost.cli import render

    render.print_json(ports) if json else render.ports(ports, base_url)


@ports_app.command("share")
def ports_share(
    name: NameArg,
    port: PortArg,
    level: Annotated[str, typer.Option("--level", help="private (the owner and admins) or authenticated "
                                                       "(any vmhost user may open a tunnel to it).")],
    json: JsonOpt = False,
) -> None:
    """Set who may reach one port of a workspace."""
    shared = run(lambda c: c.request("PUT", f"/api/v1/workspaces/{name}/ports/{port}/sharing",
                                     json={"level": level}))
    from vmhost.cli import render

    if json:
        render.print_json(shared)
    else:
        render.out().print(f"port {shared['port']} of {name}: {shared['sharing']}")


@workspaces_app.command("port-forward")
def ws_port_forward(
    name: NameArg,
    forwards: Annotated[list[str], typer.Argument(help="[LOCAL:]REMOTE, e.g. 3000 or 8000:3000 (LOCAL 0: any "
                                                       "free port).", show_default=False)],
) -> None:
    """Listen on 127.0.0.1 and tunnel each connection to a port in the workspace, until Ctrl-C."""
    from vmhost.cli.forward import parse_forward

    parsed = [parse_forward(text) for text in forwards]

    def action(client: "VmhostClient") -> None:
        import anyio

        from vmhost.cli import render
        from vmhost.cli.forward import Forwarder

        def listening(forward: "Forward", local: int) -> None:
            render.out().print(f"forwarding 127.0.0.1:{local} -> {name}:{forward.remote}", highlight=False)

        forwarder = Forwarder(client, name, lambda line: render.err().print(line, highlight=False))
        anyio.run(forwarder.serve, parsed, listening)
        if forwarder.interrupted:
            raise typer.Exit(130)

    try:
        run(action)
    except KeyboardInterrupt:  # before the forward listens
        raise typer.Exit(130) from None
