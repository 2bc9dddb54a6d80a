"""vmhost pools ls: the warm pools of the templates with a pool_size (admins)."""

import typer

from vmhost.cli.base import JsonOpt, app, run

pools_app = typer.Typer(help="Warm pools: workspaces of a template kept ready for creates to claim (admins).",
                        no_args_is_help=True)
app.add_typer(pools_app, name="pools")


@pools_app.command("ls")
def pools_ls(json: JsonOpt = False) -> None:
    """List the warm pools: each template's pool size, and its workspaces ready, filling and failed."""
    pools = run(lambda c: c.items("/pools"))
    from vmhost.cli import render

    render.print_json(pools) if json else render.pools(pools)
