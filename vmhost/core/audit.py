"""The audit log: who did what, through which door, from where, to which workspace, and how it ended.

Entries live in their own table with no link to workspaces or tokens, so they outlive both. The
daemon records every mutating request (and every refused one) in one place; admins read it back.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta

from vmhost.core.models import Caller, utcnow
from vmhost.core.paging import DEFAULT_LIMIT, Order, Page
from vmhost.core.rows import equal_to, from_text, to_text
from vmhost.core.store import Store

AUDIT_ORDER = Order("audit", {"id": int}, descending=True)


@dataclass
class AuditEntry:
    door: str
    method: str
    path: str
    status: int
    user: str | None = None
    address: str | None = None
    action: str | None = None
    workspace_id: str | None = None
    workspace_name: str | None = None
    code: str | None = None
    forwarded_for: str | None = None
    phase: str | None = None
    time: datetime = field(default_factory=utcnow)
    id: int | None = None


_COLUMNS = tuple(f.name for f in fields(AuditEntry) if f.name != "id")


def _entry(row: sqlite3.Row) -> AuditEntry:
    data = {key: row[key] for key in row.keys()}  # noqa: SIM118 (a Row iterates over its values)
    data["time"] = from_text(data["time"])
    return AuditEntry(**data)


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store

    def record(self, entry: AuditEntry) -> AuditEntry:
        values = [to_text(entry.time) if name == "time" else getattr(entry, name) for name in _COLUMNS]
        with self.store.transaction() as conn:
            cursor = conn.execute(f"INSERT INTO audit ({', '.join(_COLUMNS)}) VALUES "
                                  f"({', '.join('?' for _ in _COLUMNS)})", values)
        entry.id = cursor.lastrowid
        return entry

    def search(self, caller: Caller, user: str | None = None, workspace: str | None = None,
               since: datetime | None = None, until: datetime | None = None,
               limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page[AuditEntry]:
        """Newest first. `workspace` matches a workspace's id or its name."""
        caller.require_admin("read the audit log")
        where, params = equal_to(user=user)
        if workspace is not None:
            where.append("(workspace_id = ? OR workspace_name = ?)")
            params.extend([workspace, workspace])
        if since is not None:
            where.append("time >= ?")
            params.append(to_text(since))
        if until is not None:
            where.append("time <= ?")
            params.append(to_text(until))
        return self.store.read_page("audit", where, params, AUDIT_ORDER, limit, cursor, _entry)

    def prune(self, retention_seconds: float) -> int:
        """Drop entries older than the retention (the audit pruner's task); returns how many."""
        before = to_text(utcnow() - timedelta(seconds=retention_seconds))
        with self.store.transaction() as conn:
            return conn.execute("DELETE FROM audit WHERE time < ?", (before,)).rowcount
