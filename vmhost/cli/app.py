"""The `vmhost` command. Thin: each command asks the daemon over HTTP and renders the answer.

Heavy modules (httpx, rich, the daemon) are imported inside the commands that need them, so the
CLI and shell completion start fast. Each command module registers its commands on the apps in
`vmhost.cli.base` when imported here.
"""

from vmhost.cli import (  # noqa: F401  (registration)
    access, admin, edits, events, files, local, openapi, operations, shell, snapshots, templates, tokens,
    workspaces)
from vmhost.cli.base import app
from vmhost.errors import VmhostError


def main() -> None:
    try:
        app()
    except VmhostError as exc:  # raised outside a client call, e.g. while parsing an option
        from vmhost.cli import render

        render.error_line(exc.detail)
        raise SystemExit(exc.exit_code) from None
