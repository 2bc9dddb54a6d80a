"""How the CLI shows things: rich tables for people, JSON for scripts, one red line for errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from rich.console import Console
from rich.table import Table

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

STATUS_STYLE = {"running": "green", "succeeded": "green", "stopped": "yellow", "pending": "cyan",
                "provisioning": "cyan", "deleting": "magenta", "error": "red", "failed": "red", "ready": "green",
                "creating": "cyan"}


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def error_line(message: str) -> None:
    from rich.markup import escape

    err.print(f"[red]Error:[/red] {escape(message)}", soft_wrap=True, markup=True)


def status(text: str) -> str:
    return f"[{STATUS_STYLE.get(text, 'white')}]{text}[/]"


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


@lru_cache(maxsize=1024)
def _parse_cell(cell: str) -> tuple[str, tuple[Any, ...]]:
    """A cell's plain text and style spans. Most cells carry no markup and skip the parser; the rest
    (statuses mostly) repeat, hence the cache."""
    if "[" not in cell:
        return cell, ()
    from rich.text import Text

    text = Text.from_markup(cell)
    return text.plain, tuple(text.spans)


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> None:
    """Each column as wide as its widest cell, two spaces apart, lines never wrapped (like `docker ps`).
    Built as one Text from plain strings and style spans: rich's Table measures and wraps every cell,
    which takes seconds for a thousand rows."""
    from rich.cells import cell_len
    from rich.text import Span, Text

    lines = [[(column, (Span(0, len(column), "bold"),)) for column in columns],
             *([_parse_cell(cell) for cell in row] for row in rows)]
    widths = [max(cell_len(plain) for plain, _ in column) + 2 for column in zip(*lines, strict=True)]
    widths[-1] = 0  # no padding after the last column
    parts, spans, offset = [], [], 0
    if title:
        parts.append(f"{title}\n")
        spans.append(Span(0, len(title), "italic"))
        offset = len(title) + 1
    for line in lines:
        for (plain, cell_spans), width in zip(line, widths, strict=True):
            spans.extend(Span(offset + span.start, offset + span.end, span.style) for span in cell_spans)
            padded = plain + " " * max(width - cell_len(plain), 0)
            parts.append(padded)
            offset += len(padded)
        parts.append("\n")
        offset += 1
    if out.color_system is None:  # no styles would be shown (a pipe, NO_COLOR): skip rich's rendering
        out.file.write("".join(parts))
    else:
        out.print(Text("".join(parts), spans=spans), end="", soft_wrap=True)


def workspaces(items: list[dict[str, Any]], show_owner: bool) -> None:
    if not items:
        out.print("No workspaces. Create one with: vmhost ws create NAME --template base")
        return
    columns = ["NAME", *(["OWNER"] if show_owner else []), "STATUS", "TEMPLATE", "EXPIRES", "PORTS", "LABELS", "ID"]
    rows = []
    for w in items:
        ports = ", ".join(f"{v}->{k}" for k, v in w["connection"]["ports"].items())
        labels = ", ".join(f"{k}={v}" for k, v in w["labels"].items())
        rows.append([w["name"], *([w["owner"]] if show_owner else []), status(w["status"]), w["template"],
                     relative(w["expires_at"]), ports or "-", labels or "-", w["id"]])
    _table(columns, rows)


def workspace(w: dict[str, Any]) -> None:
    rows = [
        ("Name", w["name"]), ("ID", w["id"]), ("Owner", w["owner"]), ("Status", status(w["status"])),
        ("Reason", w["status_reason"] or "-"), ("Template", f"{w['template']} ({w['image']})"),
        ("Repository", f"{w['repo_url']} {w['branch'] or ''}".strip() if w["repo_url"] else "-"),
        ("Resources", f"cpus={w['cpus'] or 'host'} memory={str(w['memory_mb']) + 'MB' if w['memory_mb'] else 'host'}"),
        ("Expires", f"{relative(w['expires_at'])} ({w['expires_at']})" if w["expires_at"] else "never"),
        ("Labels", ", ".join(f"{k}={v}" for k, v in w["labels"].items()) or "-"),
        ("Plugins", ", ".join(w["plugins"]) or "-"),
        ("Container", w["connection"]["container_name"]),
        ("Ports", ", ".join(f"{v} -> {k}" for k, v in w["connection"]["ports"].items()) or "-"),
        ("Shell", w["connection"]["shell"]),
        ("Operation", w["current_operation_id"] or "-"),
        ("Created", w["created_at"]),
    ]
    _details(rows)


def _details(rows: Sequence[tuple[str, Any]]) -> None:
    """One thing as a two-column table of field and value."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, str(value))
    out.print(table)


def operations(items: list[dict[str, Any]]) -> None:
    if not items:
        out.print("No operations.")
        return
    rows = [[o["id"], o["type"], status(o["status"]), o["workspace_name"] or "-", o["requested_by"],
             relative(o["created_at"]), (o["error"] or "")[:80]] for o in items]
    _table(["ID", "TYPE", "STATUS", "WORKSPACE", "BY", "CREATED", "ERROR"], rows)


def operation(o: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key in ("id", "type", "status", "workspace_name", "workspace_id", "requested_by", "created_at",
                "started_at", "finished_at", "error"):
        value = o.get(key)
        table.add_row(key.replace("_", " ").capitalize(), status(value) if key == "status" else str(value or "-"))
    out.print(table)
    if o.get("output"):
        out.print("[bold]Output[/bold]")
        out.print(o["output"], markup=False, end="" if o["output"].endswith("\n") else "\n")


def templates(data: dict[str, Any]) -> None:
    rows = [[t["name"], t["image"], t["description"], ", ".join(t["ports"]) or "-",
             "built-in" if t["source"] == "builtin" else t["source"]] for t in data["templates"]]
    _table(["NAME", "IMAGE", "DESCRIPTION", "PORTS", "SOURCE"], rows)
    for broken in data.get("broken", []):
        err.print(f"[yellow]Warning:[/yellow] template file {broken['source']} is broken: {broken['error']}",
                  markup=True)


def template(t: dict[str, Any]) -> None:
    provision = [p if isinstance(p, str) else " ".join(p) for p in t["provision"]]
    _details([
        ("Name", t["name"]), ("Description", t["description"] or "-"), ("Image", t["image"]),
        ("Command", " ".join(t["command"])), ("Environment", ", ".join(f"{k}={v}" for k, v in t["env"].items()) or "-"),
        ("Ports", ", ".join(t["ports"]) or "-"), ("Provision", "\n".join(provision) or "-"),
        ("Resources", f"cpus={t['cpus'] or 'host'} memory={str(t['memory_mb']) + 'MB' if t['memory_mb'] else 'host'}"),
        ("Shell", t["shell"] or "-"), ("Source", "built-in" if t["source"] == "builtin" else t["source"]),
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
        out.print("No snapshots. Take one with: vmhost ws snapshot create WORKSPACE NAME")
        return
    rows = [[s["name"], status(s["status"]), size(s["size_bytes"]), relative(s["created_at"]), s["id"]]
            for s in items]
    _table(["NAME", "STATUS", "SIZE", "CREATED", "ID"], rows)


def tokens(items: list[dict[str, Any]]) -> None:
    if not items:
        out.print("No tokens.")
        return
    rows = [[t["id"], t["user"], t["name"] or "-", t["scope"], "yes" if t["admin"] else "no", relative(t["created_at"]),
             relative(t["expires_at"]) if t["expires_at"] else "never",
             "[red]revoked[/]" if t["revoked_at"] else "[green]active[/]"] for t in items]
    _table(["ID", "USER", "NAME", "SCOPE", "ADMIN", "CREATED", "EXPIRES", "STATE"], rows)
