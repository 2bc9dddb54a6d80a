"""The `vmhost` command. Thin: each command asks the daemon over HTTP and renders the answer.

Heavy modules (httpx, rich, the daemon) are imported inside the commands that need them, so the
CLI and shell completion start fast. Each command module registers its commands on the apps in
`vmhost.cli.base` when imported here. Command modules do not use `from __future__ import
annotations`: Typer would then compile and evaluate every parameter's annotation string on each run.
"""

import copy
import os
from typing import TYPE_CHECKING

from vmhost.errors import VmhostError

if TYPE_CHECKING:
    from typer.core import TyperGroup


def cli() -> "TyperGroup":
    """The command tree. `ws` is the same click group as `workspaces` under a second name: adding the
    Typer app twice would have Typer build every workspace command twice on each run."""
    import typer.main
    from typer.core import TyperGroup

    from vmhost.cli import (  # noqa: F401  (registration)
        access,
        admin,
        edits,
        events,
        files,
        keys,
        local,
        nodes,
        openapi,
        operations,
        pools,
        ports,
        shell,
        snapshots,
        sshproxy,
        templates,
        tokens,
        workspaces,
    )
    from vmhost.cli.base import app

    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    alias = copy.copy(group.commands["workspaces"])
    alias.name, alias.help, alias.short_help = "ws", "Alias of 'workspaces'.", None
    names = list(group.commands)
    names.insert(names.index("workspaces") + 1, "ws")  # listed in help right after 'workspaces'
    group.commands = {name: group.commands.get(name, alias) for name in names}
    return group


def main() -> None:
    if os.environ.get("_VMHOST_COMPLETE"):  # a Tab in a shell (vmhost.cli.completion.COMPLETE_VAR)
        from vmhost.cli.completion import complete_fast

        if complete_fast():  # on a workspace name: answered without building the command tree
            return
    try:
        cli()()
    except VmhostError as exc:  # raised outside a client call, e.g. while parsing an option
        from vmhost.cli import render

        render.error_line(exc.detail)
        raise SystemExit(exc.exit_code) from None
