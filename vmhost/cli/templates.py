"""vmhost templates: what workspaces can be created from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vmhost.cli.base import JsonOpt, run, templates_app

if TYPE_CHECKING:
    pass


@templates_app.command("ls")
def templates_ls(json: JsonOpt = False) -> None:
    """List the templates workspaces can be created from."""
    data = run(lambda c: c.get("/templates"))
    from vmhost.cli import render

    render.print_json(data) if json else render.templates(data)
