"""vmhost keys: SSH public keys for logging in to workspaces (`ssh WORKSPACE@host`, `ssh NAME.vmhost`)."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from vmhost.cli.base import JsonOpt, fail, keys_app, run
from vmhost.errors import InvalidInput


@keys_app.command("add")
def keys_add(
    file: Annotated[Path, typer.Argument(help="A public key file, e.g. ~/.ssh/id_ed25519.pub; - for stdin.")],
    user: Annotated[str | None, typer.Option(help="Whose key (admins only for others). Default: you.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin key: may open USER/WORKSPACE (admins only).")]
    = False,
    json: JsonOpt = False,
) -> None:
    """Register an SSH public key."""
    try:
        text = sys.stdin.read() if str(file) == "-" else file.expanduser().read_text()
    except (OSError, UnicodeDecodeError) as exc:
        fail(InvalidInput(f"cannot read {file}: {getattr(exc, 'strerror', None) or exc}"))
    key = run(lambda c: c.post("/ssh-keys", {"public_key": text, "user": user, "admin": admin}))
    from vmhost.cli import render

    if json:
        render.print_json(key)
    else:
        render.out().print(f"key {key['id']} ({key['fingerprint']}) added for {key['user']}")


@keys_app.command("ls")
def keys_ls(
    user: Annotated[str | None, typer.Option(help="Another user's keys, or '*' for everyone's (admins only).")]
    = None,
    json: JsonOpt = False,
) -> None:
    """List SSH keys."""
    items = run(lambda c: c.items("/ssh-keys", None, **({"user": user} if user else {})))
    from vmhost.cli import render

    render.print_json(items) if json else render.ssh_keys(items)


@keys_app.command("rm")
def keys_rm(key_id: str, json: JsonOpt = False) -> None:
    """Remove an SSH key; it stops working at once."""
    key = run(lambda c: c.delete(f"/ssh-keys/{key_id}"))
    from vmhost.cli import render

    render.print_json(key) if json else render.out().print(f"key {key['id']} ({key['fingerprint']}) removed")
