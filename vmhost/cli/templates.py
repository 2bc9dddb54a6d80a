"""vmhost templates: what workspaces can be created from."""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from vmhost.cli.base import JsonOpt, run, templates_app

if TYPE_CHECKING:
    from vmhost.cli.client import VmhostClient


def _all_templates(client: "VmhostClient") -> dict[str, Any]:
    pages = list(client.pages("/templates"))
    return {"templates": [t for page in pages for t in page["items"]], "broken": pages[0]["broken"]}


@templates_app.command("ls")
def templates_ls(json: JsonOpt = False) -> None:
    """List the templates workspaces can be created from."""
    data = run(_all_templates)
    from vmhost.cli import render

    render.print_json(data) if json else render.templates(data)


@templates_app.command("show")
def templates_show(name: Annotated[str, typer.Argument(help="Template name.")], json: JsonOpt = False) -> None:
    """Show one template in full; a broken template file is reported with its error."""
    template = run(lambda c: c.get(f"/templates/{name}"))
    from vmhost.cli import render

    render.print_json(template) if json else render.template(template)
