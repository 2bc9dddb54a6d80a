"""Commands that act on this machine, not through the daemon: config show, daemon."""

from pathlib import Path
from typing import Annotated, Any

import typer

from vmhost.cli.base import JsonOpt, app, config_app, fail
from vmhost.errors import VmhostError


def _settings(**overrides: Any) -> Any:
    from vmhost.config import Settings

    try:
        return Settings.load(overrides)
    except VmhostError as exc:
        fail(exc)


@config_app.command("show")
def config_show(json: JsonOpt = False) -> None:
    """Print every resolved setting and where it came from (flag, env, file or default)."""
    settings = _settings()
    from vmhost.cli import render

    rows = settings.described()
    if json:
        render.print_json({name: {"value": value, "source": source} for name, value, source in rows})
        return
    from rich.table import Table

    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("SETTING", "VALUE", "SOURCE"):
        table.add_column(column, overflow="fold")
    for name, value, source in rows:
        table.add_row(name, value or "-", source)
    render.out().print(table)
    render.out().print(f"config file: {settings.config_file or 'none'}")
    from vmhost.core.sshhost import host_key_fingerprint, host_key_path

    if settings.ssh_address is not None:
        fingerprint = host_key_fingerprint(host_key_path(settings.db_path))
        render.out().print(f"ssh host key: {fingerprint or 'not made yet (the daemon makes it when it starts)'}")


@app.command("daemon")
def daemon(
    socket: Annotated[Path | None, typer.Option("--listen-socket", help="Unix socket to listen on.")] = None,
    bind: Annotated[str | None, typer.Option(help="TCP host:port to listen on ('' for none).")] = None,
    db: Annotated[Path | None, typer.Option(help="SQLite database file.")] = None,
    templates_dir: Annotated[Path | None, typer.Option(help="Directory of template files.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Serve plain HTTP beyond loopback without TLS or "
                                                              "a trusted proxy (not recommended).")] = False,
) -> None:
    """Run the vmhost daemon in the foreground (systemd runs this)."""
    settings = _settings(socket=socket, bind=bind, db_path=db, templates_dir=templates_dir,
                         allow_insecure_tcp=insecure or None)
    from vmhost.daemon.serve import run as serve

    serve(settings)
