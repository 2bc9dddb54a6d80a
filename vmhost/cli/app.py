"""The `vmhost` command. Thin: each command asks the daemon over HTTP and renders the answer.

Heavy modules (httpx, rich, the daemon) are imported inside the commands that need them, so the
CLI and shell completion start fast. Each command module registers its commands on the apps in
`vmhost.cli.base` when imported here.
"""

from vmhost.cli import local, operations, templates, tokens, workspaces  # noqa: F401  (registration)
from vmhost.cli.base import app


def main() -> None:
    app()
