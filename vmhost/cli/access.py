"""vmhost whoami, vmhost quotas show|set, vmhost audit: who may do what, and who did what."""

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer

from vmhost.cli.base import JsonOpt, app, run
from vmhost.cli.durations import parse_duration, seconds_or_never
from vmhost.errors import InvalidInput

quotas_app = typer.Typer(help="Per-user quotas (admins set them).", no_args_is_help=True)
app.add_typer(quotas_app, name="quotas")

LIMITS = ("max_workspaces", "max_cpus", "max_memory_mb", "max_ttl_seconds", "max_snapshots", "max_pids",
          "max_snapshot_bytes", "max_idle_timeout_seconds")


def _quota_rows(quota: dict[str, Any]) -> list[tuple[str, str]]:
    if quota["exempt"]:
        return [("Quota", "none (admin)")]
    from vmhost.cli.render import size

    limits, usage, overrides = quota["limits"], quota["usage"], quota["overrides"]

    def mark(name: str) -> str:
        return " (set for this user)" if overrides.get(name) is not None else ""

    return [
        ("Workspaces", f"{usage['workspaces']} of {limits['max_workspaces']}{mark('max_workspaces')}"),
        ("CPUs", f"{usage['cpus']:g} of {limits['max_cpus']:g}{mark('max_cpus')}"),
        ("Memory", f"{usage['memory_mb']} of {limits['max_memory_mb']} MB{mark('max_memory_mb')}"),
        ("Longest TTL", f"{limits['max_ttl_seconds']} s{mark('max_ttl_seconds')}"),
        ("Snapshots", f"{limits['max_snapshots']} per workspace{mark('max_snapshots')}"),
        ("Snapshot disk", f"{size(usage['snapshot_bytes'])} of {size(limits['max_snapshot_bytes'])}"
                          f"{mark('max_snapshot_bytes')}"),
        ("Processes", f"{limits['max_pids']} in total{mark('max_pids')}"),
        ("Longest idle", (f"{limits['max_idle_timeout_seconds']} s" if limits.get("max_idle_timeout_seconds")
                          else "no maximum") + mark("max_idle_timeout_seconds")),
    ]


@app.command("whoami")
def whoami(json: JsonOpt = False) -> None:
    """Who the daemon thinks you are: user, role, door, scope and quota use."""
    me = run(lambda c: c.get("/me"))
    from vmhost.cli import render

    if json:
        render.print_json(me)
        return
    render.details([("User", me["user"]), ("Role", me["role"]), ("Door", me["door"]), ("Scope", me["scope"]),
                    ("Address", me["address"] or "-"), ("Token", me["token_id"] or "-"), *_quota_rows(me["quota"])])


@quotas_app.command("show")
def quotas_show(user: Annotated[str | None, typer.Argument(help="Whose quota. Default: yours.")] = None,
                json: JsonOpt = False) -> None:
    """A user's limits and what they use now."""
    def fetch(client: Any) -> dict[str, Any]:
        if user is None:
            return client.get("/me")["quota"]
        return client.get(f"/quotas/{user}")

    quota = run(fetch)
    from vmhost.cli import render

    if json:
        render.print_json(quota)
    else:
        render.details([("User", quota["user"]), *_quota_rows(quota)])


@quotas_app.command("set")
def quotas_set(
    user: Annotated[str, typer.Argument(help="Whose quota.")],
    max_workspaces: Annotated[int | None, typer.Option(help="Workspaces the user may have.")] = None,
    max_cpus: Annotated[float | None, typer.Option(help="CPUs in total.")] = None,
    max_memory: Annotated[int | None, typer.Option(help="MB of memory in total.")] = None,
    max_ttl: Annotated[str | None, typer.Option(help="Longest TTL, e.g. 7d.")] = None,
    max_snapshots: Annotated[int | None, typer.Option(help="Snapshots per workspace.")] = None,
    max_pids: Annotated[int | None, typer.Option(help="Processes and threads in total.")] = None,
    max_snapshot_bytes: Annotated[int | None, typer.Option(help="Bytes of snapshots on disk in total.")] = None,
    max_idle_timeout: Annotated[str | None, typer.Option(help="Longest idle timeout, e.g. 2h (also the one of a "
                                                              "workspace without); 'none': no maximum.")] = None,
    reset: Annotated[bool, typer.Option("--reset", help="Drop the user's other overrides: back to the defaults.")]
    = False,
    json: JsonOpt = False,
) -> None:
    """Set limits for one user (admins). Limits not named keep their current value, unless --reset."""
    changes = {"max_workspaces": max_workspaces, "max_cpus": max_cpus, "max_memory_mb": max_memory,
               "max_ttl_seconds": int(parse_duration(max_ttl)) if max_ttl else None, "max_snapshots": max_snapshots,
               "max_pids": max_pids, "max_snapshot_bytes": max_snapshot_bytes,
               "max_idle_timeout_seconds": seconds_or_never(max_idle_timeout) if max_idle_timeout else None}
    changes = {k: v for k, v in changes.items() if v is not None}

    def apply(client: Any) -> dict[str, Any]:
        current = {} if reset else {k: v for k, v in client.get(f"/quotas/{user}")["overrides"].items()
                                    if v is not None}
        return client.request("PUT", f"/api/v1/quotas/{user}", json={**current, **changes})

    quota = run(apply)
    from vmhost.cli import render

    if json:
        render.print_json(quota)
    else:
        render.details([("User", quota["user"]), *_quota_rows(quota)])


def _moment(text: str | None) -> str | None:
    """An ISO time, or a duration meaning that long ago (1h, 7d)."""
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        return (datetime.now(UTC) - timedelta(seconds=parse_duration(text))).isoformat()
    except InvalidInput:
        raise InvalidInput(f"invalid time {text!r}: an ISO time (2026-01-31T12:00) or how long ago (1h, 7d)") \
            from None


@app.command("audit")
def audit(
    user: Annotated[str | None, typer.Option(help="Only this caller.")] = None,
    workspace: Annotated[str | None, typer.Option(help="Only this workspace (id or name).")] = None,
    since: Annotated[str | None, typer.Option(help="From this time, or this long ago (1h, 7d).")] = None,
    until: Annotated[str | None, typer.Option(help="Up to this time, or this long ago.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many entries.")] = 200,
    json: JsonOpt = False,
) -> None:
    """The audit log (admins): who did what, through which door, and how it ended; newest first."""
    params = {"user": user, "workspace": workspace, "since": _moment(since), "until": _moment(until)}
    entries = run(lambda c: c.items("/audit", limit, **params))
    from vmhost.cli import render

    if json:
        render.print_json(entries)
        return
    if not entries:
        render.out().print("No audit entries.")
        return
    from rich.table import Table

    table = Table(header_style="bold", box=None, pad_edge=False)
    for column in ("TIME", "USER", "DOOR", "ADDRESS", "REQUEST", "ACTION", "WORKSPACE", "RESULT"):
        table.add_column(column, overflow="fold")
    for e in entries:
        result = " ".join(filter(None, (str(e["status"]), e["code"], e.get("phase") and f"({e['phase']})")))
        address = (e["address"] or "-") + (f" for {e['forwarded_for']}" if e.get("forwarded_for") else "")
        table.add_row(e["time"], e["user"] or "-", e["door"], address, f"{e['method']} {e['path']}",
                      e["action"] or "-", e["workspace_name"] or e["workspace_id"] or "-", result)
    render.out().print(table, markup=False)
