"""vmhost doctor, vmhost db backup/restore: operators' commands."""

import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vmhost.cli.base import JsonOpt, _connection, app, fail, run
from vmhost.errors import DaemonUnreachable, InvalidInput, InvalidState, VmhostError

if TYPE_CHECKING:
    from vmhost.cli.client import VmhostClient

db_app = typer.Typer(help="Back up and restore the daemon's database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def socket_check(path: Path) -> dict[str, Any]:
    """The daemon's socket as this machine shows it: a socket, and not open to every local user."""
    check = {"name": "socket", "ok": False, "detail": "", "hint": ""}
    try:
        info = path.lstat()
    except OSError as exc:
        check.update(detail=f"{path}: {exc.strerror}", hint="start the daemon: 'systemctl start vmhost.socket'")
        return check
    if not stat.S_ISSOCK(info.st_mode):
        check.update(detail=f"{path} is not a socket", hint="remove it and restart the daemon")
        return check
    mode = stat.S_IMODE(info.st_mode)
    import grp

    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    detail = f"{path}: mode {mode:04o}, group {group}"
    if mode & 0o007:
        check.update(detail=detail + "; every local user may connect, and the daemon drives Docker",
                     hint="set socket_group (or SocketMode=0660 in vmhost.socket) and restart the daemon")
    else:
        check.update(ok=True, detail=detail)
    return check


def daemon_check(error: VmhostError) -> dict[str, Any]:
    return {"name": "daemon", "ok": False, "detail": error.detail,
            "hint": "start it: 'systemctl start vmhost.socket' or 'vmhost daemon'"}


@app.command("doctor")
def doctor(
    fix: Annotated[bool, typer.Option("--fix", help="Remove orphaned Docker objects first.")] = False,
    json: JsonOpt = False,
) -> None:
    """Check Docker, the database, the socket, templates, free disk, a cluster's nodes and orphans. Exits 1
    when one fails."""
    checks: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []

    def ask(client: "VmhostClient") -> None:
        if client.where.startswith("unix:"):
            checks.append(socket_check(Path(client.where.removeprefix("unix:"))))
        try:
            if fix:
                removed.extend(client.delete("/orphans"))
            checks.extend(client.get("/doctor"))
        except DaemonUnreachable as exc:
            checks.append(daemon_check(exc))

    run(ask)
    from vmhost.cli import render

    if json:
        render.print_json({"checks": checks, "removed": removed})
    else:
        from rich.markup import escape

        for orphan in removed:
            render.out().print(f"removed {orphan['kind']} {escape(orphan['name'])}")
        for check in checks:
            mark = "[green]PASS[/]" if check["ok"] else "[red]FAIL[/]"
            render.out().print(f"{mark} {escape(check['name'])}: {escape(check['detail'])}", soft_wrap=True)
            if not check["ok"] and check["hint"]:
                render.out().print(f"     hint: {escape(check['hint'])}", soft_wrap=True)
    if not all(check["ok"] for check in checks):
        raise typer.Exit(1)


@db_app.command("backup")
def db_backup(path: Annotated[Path, typer.Argument(help="File to write (or a directory for a dated file).")]
              ) -> None:
    """Take a consistent copy of the database while the daemon serves. The daemon streams it; this
    command writes PATH as you (mode 0600: the database holds token hashes)."""
    from vmhost.core.backup import check_database_file

    if path.is_dir():
        path = path / f"vmhost-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.db"
    partial = path.with_name(f".{path.name}.partial")

    def download(client: "VmhostClient") -> int:
        with open(partial, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            size = client.download("/admin/backup", handle)
            handle.flush()
            os.fsync(handle.fileno())
        return size

    try:
        size = run(download)
        counts = check_database_file(partial)
    except VmhostError as exc:
        partial.unlink(missing_ok=True)
        fail(exc)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(InvalidInput(f"cannot write {path}: {exc.strerror}"))
    os.replace(partial, path)
    from vmhost.cli import render

    render.out().print(f"backed up {counts['workspaces']} workspace(s), {counts.get('tokens', 0)} token(s) "
                       f"to {path} ({size} bytes)")


def _daemon_answers(socket: Path | None) -> str | None:
    """Where a daemon answers for this database, if one does."""
    from vmhost.cli.client import VmhostClient

    client = VmhostClient(url=_connection.get("url"), socket=socket, token=_connection.get("token"), timeout=3.0)
    try:
        client.request("GET", "/health")
    except DaemonUnreachable:
        return None
    except VmhostError:
        pass  # it answered, with an error
    finally:
        client.close()
    return client.where


@db_app.command("restore")
def db_restore(
    path: Annotated[Path, typer.Argument(help="A backup written by 'vmhost db backup'.")],
    db: Annotated[Path | None, typer.Option(help="Database to replace (default: db_path from the settings).")]
    = None,
) -> None:
    """Replace the database with a backup. Refuses while the daemon answers: stop it first
    ('systemctl stop vmhost.socket vmhost.service'). The old database is kept as <db>.bak."""
    from vmhost.cli.local import _settings
    from vmhost.core.backup import restore

    settings = _settings(db_path=db)
    for socket in {_connection.get("socket"), settings.socket}:
        where = _daemon_answers(socket)
        if where is not None:
            fail(InvalidState(f"the vmhost daemon answers at {where}; stop it before restoring "
                              "('systemctl stop vmhost.socket vmhost.service')"))
    try:
        kept = restore(path, settings.db_path)
    except VmhostError as exc:
        fail(exc)
    except OSError as exc:
        fail(InvalidInput(f"cannot restore into {settings.db_path}: {exc}"))
    from vmhost.cli import render

    render.out().print(f"restored {settings.db_path} from {path}"
                       + (f"; the previous database is kept as {kept}" if kept else ""))
