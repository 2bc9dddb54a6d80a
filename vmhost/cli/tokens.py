"""vmhost tokens: API tokens for TCP callers."""

import sys
from typing import Annotated

import typer

from vmhost.cli.base import JsonOpt, run, tokens_app
from vmhost.cli.durations import parse_duration


@tokens_app.command("create")
def tokens_create(
    user: Annotated[str | None, typer.Option(help="Whose token (admins only for others). Default: you.")] = None,
    name: Annotated[str, typer.Option(help="A note to recognise it by.")] = "",
    scope: Annotated[str, typer.Option(help="read or write.")] = "write",
    admin: Annotated[bool, typer.Option("--admin", help="An admin token (admins only).")] = False,
    expires: Annotated[str | None, typer.Option(help="Expire after this long, e.g. 30d.")] = None,
    json: JsonOpt = False,
) -> None:
    """Create an API token. Prints the secret alone on stdout: TOKEN=$(vmhost tokens create --user alice)."""
    body = {"user": user, "name": name, "scope": scope, "admin": admin,
            "ttl_seconds": int(parse_duration(expires)) if expires else None}
    created = run(lambda c: c.post("/tokens", body))
    from vmhost.cli import render

    if json:
        render.print_json(created)
    else:
        sys.stdout.write(created["secret"] + "\n")
        render.err().print(f"token {created['token']['id']} for {created['token']['user']} "
                           f"({created['token']['scope']}); the secret is shown only once")


@tokens_app.command("ls")
def tokens_ls(json: JsonOpt = False) -> None:
    """List API tokens (never their secrets)."""
    items = run(lambda c: c.items("/tokens"))
    from vmhost.cli import render

    render.print_json(items) if json else render.tokens(items)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str, json: JsonOpt = False) -> None:
    """Revoke an API token at once."""
    token = run(lambda c: c.delete(f"/tokens/{token_id}"))
    from vmhost.cli import render

    render.print_json(token) if json else render.out().print(f"token {token['id']} revoked")
