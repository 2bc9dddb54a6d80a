"""How the CLI shows things: rich tables for people, JSON for scripts, one red line for errors."""

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# A table cell: plain text, or (text, rich style). Text never goes through rich's markup parser, so
# a label value like '[/x]' is shown as it is.
Cell = str | tuple[str, str]

STATUS_STYLE = {"running": "green", "succeeded": "green", "stopped": "yellow", "pending": "cyan",
                "provisioning": "cyan", "deleting": "magenta", "error": "red", "failed": "red", "ready": "green",
                "creating": "cyan", "down": "red", "drain": "yellow", "unreachable": "red"}
LOCAL_NODE = "local"  # the node id the daemon gives its one Docker engine (see GET /api/v1/nodes)


# The consoles are made on first use: importing rich costs a run ~20 ms, and a listing written to a
# pipe does not need it.
@cache
def out() -> "Console":
    from rich.console import Console

    return Console(highlight=False)


@cache
def err() -> "Console":
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def error_line(message: str) -> None:
    from rich.markup import escape

    err().print(f"[red]Error:[/red] {escape(message)}", soft_wrap=True, markup=True)


def status(text: str) -> str:
    """A status as markup, for lines printed with rich."""
    return f"[{STATUS_STYLE.get(text, 'white')}]{text}[/]"


def status_cell(text: str) -> Cell:
    return text, STATUS_STYLE.get(text, "white")


def relative(when: str | None) -> str:
    if not when:
        return "-"
    moment = datetime.fromisoformat(when)
    seconds = int((moment - datetime.now(UTC)).total_seconds())
    future = seconds >= 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            amount = f"{seconds // size}{unit}"
            break
    else:
        amount = f"{seconds}s"
    return f"in {amount}" if future else f"{amount} ago"


def duration(seconds: float) -> str:
    """A number of seconds as people write it: 90 -> 1m30s, 7200 -> 2h."""
    seconds = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)


def idle_stop(w: dict[str, Any]) -> str:
    """When a workspace is stopped for being idle: its idle timeout and, while it runs, the time."""
    timeout = w.get("idle_timeout_seconds")
    if not timeout:
        return "never"
    text = f"after {duration(timeout)} without activity"
    if w.get("idle_stop_at"):
        text += f", {relative(w['idle_stop_at'])} ({w['idle_stop_at']})"
    return text


def scheduled(w: dict[str, Any], which: str) -> str:
    """A workspace's autostart or autostop with the next time it is due, or "never"."""
    if not w.get(which):
        return "never"
    due = w.get(f"next_{which}_at")
    return f"{w[which]}, next {relative(due)} ({due})" if due else w[which]


def schedule_cell(w: dict[str, Any]) -> str:
    """A workspace's schedule in a few characters: `start / stop`, the zone written once when both share it."""
    start, stop = w.get("autostart"), w.get("autostop")
    if not start and not stop:
        return "-"
    start_zone = start.rsplit(" ", 1)[-1] if start else ""
    if start and stop and stop.endswith(" " + start_zone):
        return f"{start.rsplit(' ', 1)[0]} / {stop.rsplit(' ', 1)[0]} {start_zone}"
    return f"{start or '-'} / {stop or '-'}"


def _plain_stdout() -> bool:
    """True when rich would show no styles on stdout: a pipe or file, with no FORCE_COLOR or
    TTY_COMPATIBLE asking for them, or a console without colours. Decided for a pipe without importing rich."""
    if not sys.stdout.isatty() and not os.environ.get("FORCE_COLOR") and not os.environ.get("TTY_COMPATIBLE"):
        return True
    return out().color_system is None


def _table(columns: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
    """Each column as wide as its widest cell, two spaces apart, lines never wrapped (like `docker ps`).
    Written as runs of text, each plain or with one style: rich's Table measures and wraps every cell,
    which takes seconds for a thousand rows."""
    from rich.cells import cell_len

    lines = [[(column, "bold") for column in columns],
             *([(cell, "") if isinstance(cell, str) else cell for cell in row] for row in rows)]
    lengths = [[cell_len(text) for text, _ in line] for line in lines]
    widths = [max(column) + 2 for column in zip(*lengths, strict=True)]
    widths[-1] = 0  # no padding after the last column
    runs: list[tuple[str, str]] = []  # (text, style); the unstyled text between two styled cells is one run
    for line, line_lengths in zip(lines, lengths, strict=True):
        plain: list[str] = []
        for (text, style), length, width in zip(line, line_lengths, widths, strict=True):
            padding = " " * max(width - length, 0)
            if style:
                runs.append(("".join(plain), ""))
                runs.append((text, style))
                plain = [padding]
            else:
                plain.append(text + padding)
        plain.append("\n")
        runs.append(("".join(plain), ""))
    if _plain_stdout():
        sys.stdout.write("".join(text for text, _ in runs))
        return
    from rich.segment import Segment, Segments

    console = out()
    styles = {style: console.get_style(style) for _, style in runs if style}
    console.print(Segments(Segment(text, styles.get(style)) for text, style in runs if text), end="", soft_wrap=True)


def workspaces(items: list[dict[str, Any]], show_owner: bool) -> None:
    if not items:
        out().print("No workspaces. Create one with: vmhost ws create NAME --template base")
        return
    show_node = any(w.get("node") not in (None, LOCAL_NODE) for w in items)  # on a cluster
    show_schedule = any(w.get("autostart") or w.get("autostop") for w in items)
    columns = ["NAME", *(["OWNER"] if show_owner else []), "STATUS", *(["NODE"] if show_node else []), "TEMPLATE",
               "EXPIRES", *(["SCHEDULE"] if show_schedule else []), "PORTS", "LABELS", "ID"]
    rows = []
    for w in items:
        ports = ", ".join(f"{v}->{k}" for k, v in w["connection"]["ports"].items())
        labels = ", ".join(f"{k}={v}" for k, v in w["labels"].items())
        rows.append([w["name"], *([w["owner"]] if show_owner else []), status_cell(w["status"]),
                     *([(w.get("node") or "-")[:12]] if show_node else []), w["template"],
                     relative(w["expires_at"]), *([schedule_cell(w)] if show_schedule else []), ports or "-",
                     labels or "-", w["id"]])
    _table(columns, rows)


def workspace(w: dict[str, Any], listening: str = "-") -> None:
    """A workspace's fields; `listening` says which of its ports listen (see `ws ports`)."""
    rows = [
        ("Name", w["name"]), ("ID", w["id"]), ("Owner", w["owner"]), ("Status", status_cell(w["status"])),
        ("Reason", w["status_reason"] or "-"), ("Template", f"{w['template']} ({w['image']})"),
        ("Repository", f"{w['repo_url']} {w['branch'] or ''}".strip() if w["repo_url"] else "-"),
        ("Resources", f"cpus={w['cpus'] or 'host'} memory={str(w['memory_mb']) + 'MB' if w['memory_mb'] else 'host'}"),
        ("Node", w.get("node") or "-"),
        ("Expires", f"{relative(w['expires_at'])} ({w['expires_at']})" if w["expires_at"] else "never"),
        ("Idle stop", idle_stop(w)),
        ("Autostart", scheduled(w, "autostart")),
        ("Autostop", scheduled(w, "autostop")),
        ("Last activity", f"{relative(w['last_activity_at'])} ({w['last_activity_at']})"
                          if w.get("last_activity_at") else "-"),
        ("Labels", ", ".join(f"{k}={v}" for k, v in w["labels"].items()) or "-"),
        ("Plugins", ", ".join(w["plugins"]) or "-"),
        ("Container", w["connection"]["container_name"]),
        ("Ports", ", ".join(f"{v} -> {k}{port_label(w, k)}" for k, v in w["connection"]["ports"].items()) or "-"),
        ("Listening", listening),
        ("Shell", w["connection"]["shell"]),
        ("Operation", w["current_operation_id"] or "-"),
        ("Created", w["created_at"]),
    ]
    if w.get("devcontainer"):
        rows[6:6] = [
            ("Devcontainer", w.get("display_name") or "yes"), ("Workdir", w["workdir"]), ("User", w["user"] or "-"),
            ("Post-start", "; ".join(c if isinstance(c, str) else " ".join(c) for c in w["post_start"]) or "-"),
            ("Sources", sources(w.get("sources", {}))),
        ]
    details(rows)


def port_label(w: dict[str, Any], port: str) -> str:
    """ " (App)": the port's name from the devcontainer.json's portsAttributes, when it has one."""
    label = w.get("port_labels", {}).get(port.split("/")[0])
    return f" ({label})" if label else ""


def sources(by_setting: dict[str, str]) -> str:
    """Where each setting came from, by source: `devcontainer: image, env.FOO; request: env.BAR`."""
    by_source: dict[str, list[str]] = {}
    for setting, source in by_setting.items():
        by_source.setdefault(source, []).append(setting)
    order = ("template", "devcontainer", "request")
    return "; ".join(f"{source}: {', '.join(sorted(by_source[source]))}" for source in order if source in by_source) \
        or "-"


def ports(items: list[dict[str, Any]], base_url: str | None) -> None:
    """The ports with their previews: a preview on the daemon's path is given in full when the CLI
    reaches the daemon by URL (over the socket, a browser has no address for it: the path alone)."""
    if not items:
        out().print("Nothing listens in this workspace (on an address other than 127.0.0.1).")
        return
    rows = [[str(p["port"]), "yes" if p["listening"] else "no", "yes" if p["in_template"] else "no", p["sharing"],
             (base_url or "") + p["preview_url"] if p["preview_url"].startswith("/") else p["preview_url"],
             p.get("label") or ""] for p in items]
    _table(["PORT", "LISTENING", "TEMPLATE", "SHARING", "PREVIEW", "LABEL"], rows)


def nodes(items: list[dict[str, Any]]) -> None:
    rows = [[n["id"][:12], n["hostname"], n["address"], status_cell(n["state"]),
             "manager" if n["manager"] else "worker",
             f"{n['cpus_reserved']:g} of {n['cpus']}", f"{n['memory_mb_reserved']} of {n['memory_mb']}",
             str(n["workspaces"]), n["engine_url"] or "(not named: vmhost nodes set-engine)"] for n in items]
    _table(["ID", "HOSTNAME", "ADDRESS", "STATE", "ROLE", "CPUS", "MEMORY MB", "WORKSPACES", "ENGINE"], rows)


def pools(items: list[dict[str, Any]]) -> None:
    if not items:
        out().print("No warm pools. Give a template one with pool_size = N in its TOML file.")
        return
    _table(["TEMPLATE", "SIZE", "READY", "FILLING", "FAILED"],
           [[p["template"], str(p["size"]), str(p["ready"]), str(p["filling"]), str(p["failed"])] for p in items])


def details(rows: Sequence[tuple[str, Cell]]) -> None:
    """One thing as a two-column table of field and value, values folded to the terminal's width."""
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, Text(value) if isinstance(value, str) else Text(*value))
    out().print(table)


def operations(items: list[dict[str, Any]]) -> None:
    if not items:
        out().print("No operations.")
        return
    rows = [[o["id"], o["type"], status_cell(o["status"]), o["workspace_name"] or "-", o["requested_by"],
             relative(o["created_at"]), (o["error"] or "")[:80]] for o in items]
    _table(["ID", "TYPE", "STATUS", "WORKSPACE", "BY", "CREATED", "ERROR"], rows)


def operation(o: dict[str, Any]) -> None:
    details([(key.replace("_", " ").capitalize(), status_cell(o[key]) if key == "status" else str(o.get(key) or "-"))
              for key in ("id", "type", "status", "workspace_name", "workspace_id", "requested_by", "created_at",
                          "started_at", "finished_at", "error")])
    if o.get("output"):
        out().print("[bold]Output[/bold]")
        out().print(o["output"], markup=False, end="" if o["output"].endswith("\n") else "\n")


def templates(data: dict[str, Any]) -> None:
    rows = [[t["name"], t["image"], t["description"], ", ".join(t["ports"]) or "-",
             "built-in" if t["source"] == "builtin" else t["source"]] for t in data["templates"]]
    _table(["NAME", "IMAGE", "DESCRIPTION", "PORTS", "SOURCE"], rows)
    for broken in data.get("broken", []):
        err().print(f"[yellow]Warning:[/yellow] template file {broken['source']} is broken: {broken['error']}",
                    markup=True)


def template(t: dict[str, Any]) -> None:
    provision = [p if isinstance(p, str) else " ".join(p) for p in t["provision"]]
    details([
        ("Name", t["name"]), ("Description", t["description"] or "-"), ("Image", t["image"]),
        ("Command", " ".join(t["command"])), ("Environment", ", ".join(f"{k}={v}" for k, v in t["env"].items()) or "-"),
        ("Ports", ", ".join(t["ports"]) or "-"), ("Provision", "\n".join(provision) or "-"),
        ("Resources", f"cpus={t['cpus'] or 'host'} memory={str(t['memory_mb']) + 'MB' if t['memory_mb'] else 'host'}"),
        ("Shell", t["shell"] or "-"),
        ("Idle stop", f"after {duration(t['idle_timeout_seconds'])} without activity"
                      if t.get("idle_timeout_seconds") else "never"),
        ("Warm pool", f"{t['pool_size']} kept ready" if t.get("pool_size") else "none"),
        ("Source", "built-in" if t["source"] == "builtin" else t["source"]),
    ])


def size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    amount = count / 1024
    for unit in ("KiB", "MiB"):
        if amount < 1024:
            return f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"


def snapshots(items: list[dict[str, Any]]) -> None:
    if not items:
        out().print("No snapshots. Take one with: vmhost ws snapshot create WORKSPACE NAME")
        return
    rows = [[s["name"], status_cell(s["status"]), size(s["size_bytes"]), relative(s["created_at"]), s["id"]]
            for s in items]
    _table(["NAME", "STATUS", "SIZE", "CREATED", "ID"], rows)


def ssh_keys(items: list[dict[str, Any]]) -> None:
    if not items:
        out().print("No SSH keys.")
        return
    rows = [[k["id"], k["user"], k["fingerprint"], k["comment"] or "-", "yes" if k["admin"] else "no",
             relative(k["created_at"])] for k in items]
    _table(["ID", "USER", "FINGERPRINT", "COMMENT", "ADMIN", "ADDED"], rows)


def tokens(items: list[dict[str, Any]]) -> None:
    if not items:
        out().print("No tokens.")
        return
    rows = [[t["id"], t["user"], t["name"] or "-", t["scope"], "yes" if t["admin"] else "no", relative(t["created_at"]),
             relative(t["expires_at"]) if t["expires_at"] else "never",
             ("revoked", "red") if t["revoked_at"] else ("active", "green")] for t in items]
    _table(["ID", "USER", "NAME", "SCOPE", "ADMIN", "CREATED", "EXPIRES", "STATE"], rows)
