"""The database: the source of truth for workspaces, operations, tokens and events.

SQLite in WAL mode: one writing connection, shared by the daemon's threads behind one lock (SQLite
allows one writer at a time anyway), and read connections of their own, so a read never waits for a
write transaction (WAL readers see the last commit). A thread inside a write transaction reads through
the writer, to see its own changes. Every change that others may wait on notifies `changed`; every
event is handed to the subscribers after its transaction commits.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlite_utils import Database

from vmhost import paths
from vmhost.core import migrations
from vmhost.core.models import (
    Event,
    Operation,
    OperationStatus,
    Scope,
    Snapshot,
    SnapshotStatus,
    Token,
    Workspace,
    WorkspaceStatus,
    utcnow,
)
from vmhost.core.paging import Order, Page, check_limit
from vmhost.errors import NameTaken, OperationInFlight, OperationNotFound, StoreUnavailable, WorkspaceNotFound

log = logging.getLogger(__name__)

BUSY_TIMEOUT = 30  # seconds a write waits for another process's lock on the database
IN_FLIGHT = (OperationStatus.PENDING.value, OperationStatus.RUNNING.value)

_WS_JSON = {"labels", "env", "command", "provision", "plugins", "ports", "capabilities"}
_OP_JSON = {"params", "result"}
_WS_TIMES = {"created_at", "updated_at", "expires_at"}
_OP_TIMES = {"created_at", "started_at", "finished_at"}
_TOKEN_TIMES = {"created_at", "expires_at", "last_used_at", "revoked_at"}

# How each collection is listed: its order, the id last to break ties (times are stored as text of one
# format, so they sort as they compare)
WORKSPACE_ORDER = Order("workspaces", {"created_at": str, "id": str})
OPERATION_ORDER = Order("operations", {"created_at": str, "id": str}, descending=True)
TOKEN_ORDER = Order("tokens", {"created_at": str, "id": str})
SNAPSHOT_ORDER = Order("snapshots", {"created_at": str, "id": str})
EVENT_ORDER = Order("events", {"id": int})

T = TypeVar("T")


def to_text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds")


def from_text(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def equal_to(**columns: Any) -> tuple[list[str], list[Any]]:
    """`column = ?` conditions for each column given a value (None means: any), with their parameters."""
    given = {column: value for column, value in columns.items() if value is not None}
    return [f"{column} = ?" for column in given], list(given.values())


def where_clause(conditions: Sequence[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def _encode(row: dict[str, Any], json_fields: set[str], time_fields: set[str]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if key in json_fields:
            value = json.dumps(value)
        elif key in time_fields:
            value = to_text(value)
        elif hasattr(value, "value"):  # enums
            value = value.value
        out[key] = value
    return out


def _decode(row: sqlite3.Row, json_fields: set[str], time_fields: set[str]) -> dict[str, Any]:
    out = {}
    for key in row.keys():
        value = row[key]
        if key in json_fields:
            value = json.loads(value) if value else None
        elif key in time_fields:
            value = from_text(value)
        out[key] = value
    return out


def _workspace(row: sqlite3.Row) -> Workspace:
    data = _decode(row, _WS_JSON, _WS_TIMES)
    data["status"] = WorkspaceStatus(data["status"])
    return Workspace(**data)


def _operation(row: sqlite3.Row) -> Operation:
    data = _decode(row, _OP_JSON, _OP_TIMES)
    data["status"] = OperationStatus(data["status"])
    return Operation(**data)


def _token(row: sqlite3.Row) -> Token:
    data = _decode(row, set(), _TOKEN_TIMES)
    data.pop("hash")
    data["scope"] = Scope(data["scope"])
    data["admin"] = bool(data["admin"])
    return Token(**data)


def _event(row: sqlite3.Row) -> Event:
    data = _decode(row, {"payload"}, {"time"})
    return Event(**data)


def _snapshot(row: sqlite3.Row) -> Snapshot:
    data = _decode(row, set(), {"created_at"})
    data["status"] = SnapshotStatus(data["status"])
    return Snapshot(**data)


def _make_private(db_path: Path) -> None:
    """The database, and what SQLite writes beside it (its -wal and -shm take the database's mode), for
    the daemon's user only: they hold workspaces' environments, commands' input and output."""
    directory = db_path.parent
    if not paths.make_private_dir(directory) and directory.stat().st_mode & 0o007:
        log.warning("the database directory %s is open to other users; 'chmod o-rwx %s' closes it",
                    directory, directory)
    paths.private_file(db_path)
    for suffix in ("-wal", "-shm"):
        paths.private_file(db_path.with_name(db_path.name + suffix), create=False)


class _ThreadState(threading.local):
    """Per thread: how deep its write transactions nest, and its read connection."""

    depth = 0
    reader: sqlite3.Connection | None = None


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.in_memory = str(path) == ":memory:"  # one connection only: readers could not see it
        if not self.in_memory:
            _make_private(self.path)
        conn = self._connect()
        self.db = Database(conn)
        if not self.in_memory:
            self.db.enable_wal()
        conn.execute("PRAGMA synchronous = NORMAL")
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)
        self._local = _ThreadState()
        self._readers: weakref.WeakSet[sqlite3.Connection] = weakref.WeakSet()  # every thread's, to close them
        self._readers_lock = threading.Lock()
        self._subscribers: list[Callable[[Event], None]] = []
        self._pending_events: list[Event] = []
        self.backup_written = migrations.migrate(self.db, None if self.in_memory else self.path)

    # -- plumbing -------------------------------------------------------------------------------

    def _connect(self, factory: type[sqlite3.Connection] = sqlite3.Connection) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT,
                               factory=factory)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT * 1000}")
        return conn

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()
        with self._readers_lock:
            readers = list(self._readers)
        for conn in readers:
            conn.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return migrations.schema_version(self.db)

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """Call `callback(event)` after each event's transaction commits (from the writer's thread)."""
        self._subscribers.append(callback)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            events_before = len(self._pending_events)
            self._local.depth = self._local.depth + 1
            try:
                with self.db.atomic() if self.db.conn.in_transaction else self._immediate():
                    yield self.db.conn
            except sqlite3.OperationalError as exc:
                del self._pending_events[events_before:]
                raise self._unavailable("write", exc) from exc
            except BaseException:
                del self._pending_events[events_before:]
                raise
            finally:
                self._local.depth -= 1
            if not self.db.conn.in_transaction:
                self._publish()

    @contextmanager
    def _immediate(self) -> Iterator[None]:
        """A write transaction that takes SQLite's write lock up front, so it waits out another writer
        (busy_timeout) instead of failing at once when its read snapshot has gone stale (BUSY_SNAPSHOT)."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _unavailable(self, doing: str, exc: sqlite3.OperationalError) -> StoreUnavailable:
        text = str(exc)
        if "full" in text:
            return StoreUnavailable(f"database {doing} failed: the disk is full ({text}); free space in "
                                    f"{self.path.parent} and try again")
        if "locked" in text or "busy" in text:
            return StoreUnavailable(f"database {doing} failed: another process has held the database locked for "
                                    f"{BUSY_TIMEOUT} s ({text}); try again")
        return StoreUnavailable(f"database {doing} failed: {text}")

    def _publish(self) -> None:
        events, self._pending_events = self._pending_events, []
        self.changed.notify_all()
        for event in events:
            for callback in self._subscribers:
                try:
                    callback(event)
                except Exception:  # a broken subscriber must not break writers
                    log.exception("event subscriber failed")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """A connection to read through, several statements in one consistent snapshot; it does not
        wait for a write transaction (inside one, it is the writer's, to see the changes made so far)."""
        if self.in_memory or self._local.depth:
            with self._lock, self._mapping_errors():
                yield self.db.conn
            return
        with self._mapping_errors(), self._reader() as conn:
            if conn.in_transaction:  # a reading() inside another: the same snapshot
                yield conn
                return
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        if self.in_memory or self._local.depth:
            with self._lock, self._mapping_errors():
                return self.db.conn.execute(sql, params).fetchall()
        with self._mapping_errors(), self._reader() as conn:
            return conn.execute(sql, params).fetchall()

    def read_page(self, table: str, where: Sequence[str], params: Sequence[Any], order: Order, limit: int,
                  cursor: str | None, make: Callable[[sqlite3.Row], T]) -> Page[T]:
        """A page of `table`'s rows that meet `where`: the first `limit` in `order` after `cursor`'s key
        (from the first row without one), each made into a `make(row)`. Read from a read connection: it
        does not wait for a write transaction."""
        check_limit(limit)
        where, params = list(where), list(params)
        if cursor is not None:
            condition, key = order.after(cursor)
            where.append(condition)
            params.extend(key)
        rows = self._query(f"SELECT * FROM {table}{where_clause(where)} ORDER BY {order.sql} LIMIT ?",
                           (*params, limit + 1))
        return order.page(rows, limit, lambda row: tuple(row[column] for column in order.columns)).map(make)

    @contextmanager
    def _mapping_errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise self._unavailable("read", exc) from exc

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """This thread's read connection, opened at its first read and closed when the thread ends (or
        the store closes); one that failed is replaced at the next read."""
        conn = self._local.reader
        if conn is None:
            try:
                conn = self._connect(_ReadConnection)
                conn.execute("PRAGMA query_only = 1")
            except sqlite3.OperationalError as exc:
                raise self._unavailable("read", exc) from exc
            self._local.reader = conn
            with self._readers_lock:
                self._readers.add(conn)
        try:
            yield conn
        except sqlite3.Error:
            self._local.reader = None
            conn.close()
            raise

    def ping(self) -> bool:
        try:
            self._query("SELECT 1")
            return True
        except StoreUnavailable:
            return False

    def workspaces_version(self) -> int:
        """A number that grows with every write to the workspaces table, by this process or another
        (a trigger bumps it), so answers built from that table alone can be cached on it."""
        return self._table_version("workspaces")

    def tokens_version(self) -> int:
        """The same for the tokens table: grows with every token created, changed, revoked or deleted."""
        return self._table_version("tokens")

    def _table_version(self, table: str) -> int:
        return self._query("SELECT version FROM table_versions WHERE name = ?", (table,))[0][0]

    def integrity_check(self) -> list[str]:
        """SQLite's own check of the whole file: ['ok'], or the problems it found."""
        return [row[0] for row in self._query("PRAGMA integrity_check")]

    def add_event(self, conn: sqlite3.Connection, type: str, workspace_id: str | None, owner: str | None,
                  payload: dict[str, Any]) -> Event:
        """Record an event inside the caller's transaction."""
        now = utcnow()
        cursor = conn.execute(
            "INSERT INTO events (type, time, workspace_id, owner, payload) VALUES (?, ?, ?, ?, ?) RETURNING id",
            (type, to_text(now), workspace_id, owner, json.dumps(payload)))
        event = Event(id=cursor.fetchone()[0], type=type, time=now, workspace_id=workspace_id, owner=owner,
                      payload=payload)
        self._pending_events.append(event)
        return event

    # -- workspaces -----------------------------------------------------------------------------

    def insert_workspace(self, workspace: Workspace, operation: Operation,
                         check: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """A new workspace and the operation that will build it, atomically. `check(conn)` runs first in
        the same transaction (writers are serialised), e.g. a quota check that raises to refuse."""
        row = _encode({f.name: getattr(workspace, f.name) for f in fields(Workspace)}, _WS_JSON, _WS_TIMES)
        row["current_operation_id"] = operation.id
        workspace.current_operation_id = operation.id
        try:
            with self.transaction() as conn:
                if check is not None:
                    check(conn)
                self._insert(conn, "workspaces", row)
                self.add_event(conn, "workspace.created", workspace.id, workspace.owner,
                               {"name": workspace.name, "status": workspace.status.value,
                                "template": workspace.template})
                self._insert_operation(conn, operation)
        except sqlite3.IntegrityError as exc:
            raise NameTaken(f"a workspace named {workspace.name!r} already exists for {workspace.owner}") from exc

    @staticmethod
    def _insert(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))

    def get_workspace(self, workspace_id: str) -> Workspace:
        rows = self._query("SELECT * FROM workspaces WHERE id = ?", (workspace_id,))
        if not rows:
            raise WorkspaceNotFound(f"no workspace {workspace_id!r}")
        return _workspace(rows[0])

    def find_workspace(self, owner: str, name: str) -> Workspace | None:
        rows = self._query("SELECT * FROM workspaces WHERE owner = ? AND name = ?", (owner, name))
        return _workspace(rows[0]) if rows else None

    def find_workspaces_named(self, name: str) -> list[Workspace]:
        return [_workspace(r) for r in self._query("SELECT * FROM workspaces WHERE name = ?", (name,))]

    def list_workspaces(self, owner: str | None = None, status: str | None = None,
                        labels: dict[str, str] | None = None) -> list[Workspace]:
        where, params = _workspace_filters(owner, status, labels)
        sql = f"SELECT * FROM workspaces{where_clause(where)} ORDER BY {WORKSPACE_ORDER.sql}"
        return [_workspace(r) for r in self._query(sql, params)]

    def page_workspaces(self, owner: str | None = None, status: str | None = None,
                        labels: dict[str, str] | None = None, *, limit: int, cursor: str | None = None,
                        ) -> Page[Workspace]:
        where, params = _workspace_filters(owner, status, labels)
        return self.read_page("workspaces", where, params, WORKSPACE_ORDER, limit, cursor, _workspace)

    def count_workspaces(self, owner: str | None = None) -> int:
        if owner is None:
            return self._query("SELECT count(*) FROM workspaces")[0][0]
        return self._query("SELECT count(*) FROM workspaces WHERE owner = ?", (owner,))[0][0]

    def count_by_status(self) -> dict[str, int]:
        return {row[0]: row[1] for row in self._query("SELECT status, count(*) FROM workspaces GROUP BY status")}

    def update_workspace(self, workspace_id: str, **changes: Any) -> Workspace:
        """Change fields of a workspace; a status change is recorded as an event."""
        with self.transaction() as conn:
            rows = conn.execute("SELECT * FROM workspaces WHERE id = ?", (workspace_id,)).fetchall()
            if not rows:
                raise WorkspaceNotFound(f"no workspace {workspace_id!r}")
            before = _workspace(rows[0])
            changes["updated_at"] = utcnow()
            row = _encode(changes, _WS_JSON, _WS_TIMES)
            assignments = ", ".join(f"{key} = ?" for key in row)
            try:
                conn.execute(f"UPDATE workspaces SET {assignments} WHERE id = ?", (*row.values(), workspace_id))
            except sqlite3.IntegrityError as exc:
                raise NameTaken(f"a workspace named {changes.get('name')!r} already exists for {before.owner}") \
                    from exc
            after = _workspace(conn.execute("SELECT * FROM workspaces WHERE id = ?", (workspace_id,)).fetchone())
            if after.status != before.status:
                self.add_event(conn, "workspace.status", workspace_id, after.owner,
                               {"name": after.name, "status": after.status.value, "previous": before.status.value,
                                "reason": after.status_reason})
            elif set(changes) - {"updated_at", "status_reason", "current_operation_id"}:
                self.add_event(conn, "workspace.updated", workspace_id, after.owner,
                               {"name": after.name, "fields": sorted(set(changes) - {"updated_at"})})
        return after

    def delete_workspace(self, workspace_id: str) -> None:
        with self.transaction() as conn:
            row = conn.execute("SELECT name, owner FROM workspaces WHERE id = ?", (workspace_id,)).fetchone()
            if row is None:
                return
            conn.execute("DELETE FROM workspaces WHERE id = ?", (workspace_id,))
            self.add_event(conn, "workspace.deleted", workspace_id, row["owner"], {"name": row["name"]})

    def expired_workspaces(self, now: datetime) -> list[Workspace]:
        rows = self._query(
            "SELECT * FROM workspaces WHERE expires_at IS NOT NULL AND expires_at <= ? AND status != ?",
            (to_text(now), WorkspaceStatus.DELETING.value))
        return [_workspace(r) for r in rows]

    # -- operations -----------------------------------------------------------------------------

    def _insert_operation(self, conn: sqlite3.Connection, operation: Operation) -> None:
        self._insert(conn, "operations",
                     _encode({f.name: getattr(operation, f.name) for f in fields(Operation)}, _OP_JSON, _OP_TIMES))
        self.add_event(conn, "operation.status", operation.workspace_id, operation.owner, _op_payload(operation))

    def add_operation(self, operation: Operation, exclusive: bool = True) -> None:
        """Queue an operation on a workspace. With `exclusive`, refuse while another is in flight."""
        with self.transaction() as conn:
            if operation.workspace_id is not None:
                ws = conn.execute("SELECT id FROM workspaces WHERE id = ?", (operation.workspace_id,)).fetchone()
                if ws is None:
                    raise WorkspaceNotFound(f"no workspace {operation.workspace_name or operation.workspace_id!r}")
                if exclusive:
                    # only exclusive operations hold a workspace: they are its current operation
                    busy = conn.execute(
                        "SELECT o.id, o.type, o.status FROM workspaces w JOIN operations o "
                        "ON o.id = w.current_operation_id WHERE w.id = ? AND o.status IN (?, ?)",
                        (operation.workspace_id, *IN_FLIGHT)).fetchone()
                    if busy is not None:
                        raise OperationInFlight(
                            f"workspace {operation.workspace_name!r} is busy with {busy['type']} operation "
                            f"{busy['id']} ({busy['status']}); wait for it or cancel it first",
                            operation_id=busy["id"])
                    conn.execute("UPDATE workspaces SET current_operation_id = ? WHERE id = ?",
                                 (operation.id, operation.workspace_id))
            self._insert_operation(conn, operation)

    def get_operation(self, operation_id: str) -> Operation:
        rows = self._query("SELECT * FROM operations WHERE id = ?", (operation_id,))
        if not rows:
            raise OperationNotFound(f"no operation {operation_id!r}")
        return _operation(rows[0])

    def list_operations(self, workspace_id: str, status: str) -> list[Operation]:
        """A workspace's operations in one status, newest first."""
        rows = self._query(f"SELECT * FROM operations WHERE workspace_id = ? AND status = ? "
                           f"ORDER BY {OPERATION_ORDER.sql}", (workspace_id, status))
        return [_operation(r) for r in rows]

    def page_operations(self, owner: str | None = None, workspace_id: str | None = None, type: str | None = None,
                        status: str | None = None, *, limit: int, cursor: str | None = None) -> Page[Operation]:
        """Newest first."""
        where, params = equal_to(owner=owner, workspace_id=workspace_id, type=type, status=status)
        return self.read_page("operations", where, params, OPERATION_ORDER, limit, cursor, _operation)

    def operations_with_status(self, *statuses: OperationStatus) -> list[Operation]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._query(f"SELECT * FROM operations WHERE status IN ({marks}) ORDER BY created_at",
                           [s.value for s in statuses])
        return [_operation(r) for r in rows]

    def claim_operation(self, operation_id: str) -> Operation | None:
        """Move a pending operation to running; None if someone else already did. Exactly-once."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE operations SET status = ?, started_at = ?, attempts = attempts + 1 "
                "WHERE id = ? AND status = ?",
                (OperationStatus.RUNNING.value, to_text(utcnow()), operation_id, OperationStatus.PENDING.value))
            if cursor.rowcount != 1:
                return None
            operation = _operation(conn.execute("SELECT * FROM operations WHERE id = ?", (operation_id,)).fetchone())
            self.add_event(conn, "operation.status", operation.workspace_id, operation.owner, _op_payload(operation))
        return operation

    def requeue_operation(self, operation_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE operations SET status = ?, started_at = NULL WHERE id = ?",
                         (OperationStatus.PENDING.value, operation_id))

    def finish_operation(self, operation_id: str, status: OperationStatus, error: str | None = None,
                         result: dict[str, Any] | None = None,
                         only_from: Sequence[OperationStatus] = (OperationStatus.PENDING, OperationStatus.RUNNING),
                         ) -> Operation | None:
        """Record the end of an operation that is still in one of `only_from`; None (and no change) when
        it is not, e.g. because it was cancelled while its thread worked."""
        with self.transaction() as conn:
            assignments = "status = ?, error = ?, finished_at = ?"
            params: list[Any] = [status.value, error, to_text(utcnow())]
            if result is not None:
                assignments += ", result = ?"
                params.append(json.dumps(result))
            marks = ", ".join("?" for _ in only_from)
            cursor = conn.execute(f"UPDATE operations SET {assignments} WHERE id = ? AND status IN ({marks})",
                                  (*params, operation_id, *(s.value for s in only_from)))
            if cursor.rowcount != 1:
                return None
            operation = _operation(conn.execute("SELECT * FROM operations WHERE id = ?", (operation_id,)).fetchone())
            if operation.workspace_id is not None:
                conn.execute("UPDATE workspaces SET current_operation_id = NULL "
                             "WHERE id = ? AND current_operation_id = ?", (operation.workspace_id, operation_id))
            self.add_event(conn, "operation.status", operation.workspace_id, operation.owner, _op_payload(operation))
        return operation

    def record_output(self, operation_id: str, output: str, chunks: Sequence[tuple[str, str]]) -> None:
        """Set what an operation keeps of its output (the recorder bounds it) and announce the new
        (stream, text) chunks as `operation.output` events."""
        with self.transaction() as conn:
            row = conn.execute("SELECT workspace_id, owner FROM operations WHERE id = ?", (operation_id,)).fetchone()
            if row is None:
                return
            conn.execute("UPDATE operations SET output = ? WHERE id = ?", (output, operation_id))
            for stream, text in chunks:
                self.add_event(conn, "operation.output", row["workspace_id"], row["owner"],
                               {"operation_id": operation_id, "stream": stream, "data": text})

    def wait_operation(self, operation_id: str, timeout: float) -> Operation:
        """Block until the operation has finished or `timeout` seconds pass; return it either way."""
        deadline = time.monotonic() + max(timeout, 0)
        with self.changed:
            while True:
                operation = self.get_operation(operation_id)
                remaining = deadline - time.monotonic()
                if operation.status.finished or remaining <= 0:
                    return operation
                self.changed.wait(min(remaining, 1.0))

    # -- snapshots ------------------------------------------------------------------------------

    def insert_snapshot(self, snapshot: Snapshot, operation: Operation,
                        check: Callable[[sqlite3.Connection, int], None] | None = None) -> None:
        """A new snapshot and the operation that takes it, atomically (refused while the workspace is busy).
        `check(conn, existing)` runs first with the number of snapshots the workspace has, e.g. a quota."""
        try:
            with self.transaction() as conn:
                if check is not None:
                    existing = conn.execute("SELECT count(*) FROM snapshots WHERE workspace_id = ?",
                                            (snapshot.workspace_id,)).fetchone()[0]
                    check(conn, existing)
                self._insert(conn, "snapshots",
                             _encode({f.name: getattr(snapshot, f.name) for f in fields(Snapshot)}, set(),
                                     {"created_at"}))
                self.add_operation(operation)
        except sqlite3.IntegrityError as exc:
            raise NameTaken(f"workspace {operation.workspace_name!r} already has a snapshot named "
                            f"{snapshot.name!r}") from exc

    def list_snapshots(self, workspace_id: str | None = None) -> list[Snapshot]:
        if workspace_id is None:
            return [_snapshot(r) for r in self._query(f"SELECT * FROM snapshots ORDER BY {SNAPSHOT_ORDER.sql}")]
        rows = self._query(f"SELECT * FROM snapshots WHERE workspace_id = ? ORDER BY {SNAPSHOT_ORDER.sql}",
                           (workspace_id,))
        return [_snapshot(r) for r in rows]

    def page_snapshots(self, workspace_id: str, *, limit: int, cursor: str | None = None) -> Page[Snapshot]:
        """A workspace's snapshots, oldest first."""
        return self.read_page("snapshots", ["workspace_id = ?"], [workspace_id], SNAPSHOT_ORDER, limit, cursor,
                              _snapshot)

    def find_snapshot(self, workspace_id: str, ref: str) -> Snapshot | None:
        """A workspace's snapshot by id or by name."""
        rows = self._query("SELECT * FROM snapshots WHERE workspace_id = ? AND (id = ? OR name = ?)",
                           (workspace_id, ref, ref))
        return _snapshot(rows[0]) if rows else None

    def images_in_use(self, excluding: str | None = None) -> set[str]:
        """The images that workspaces (but the workspace `excluding`) run from."""
        return {row["image"] for row in self._query("SELECT DISTINCT image FROM workspaces WHERE id IS NOT ?",
                                                    (excluding,))}

    def get_snapshot(self, snapshot_id: str) -> Snapshot | None:
        rows = self._query("SELECT * FROM snapshots WHERE id = ?", (snapshot_id,))
        return _snapshot(rows[0]) if rows else None

    def update_snapshot(self, snapshot_id: str, **changes: Any) -> None:
        row = _encode(changes, set(), {"created_at"})
        with self.transaction() as conn:
            conn.execute(f"UPDATE snapshots SET {', '.join(f'{key} = ?' for key in row)} WHERE id = ?",
                         (*row.values(), snapshot_id))
            if changes.get("status") == SnapshotStatus.READY:
                snapshot = _snapshot(conn.execute("SELECT * FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone())
                self.add_event(conn, "snapshot.created", snapshot.workspace_id, snapshot.owner,
                               {"snapshot_id": snapshot.id, "name": snapshot.name, "size_bytes": snapshot.size_bytes})

    def delete_snapshot(self, snapshot: Snapshot) -> None:
        with self.transaction() as conn:
            if conn.execute("DELETE FROM snapshots WHERE id = ?", (snapshot.id,)).rowcount:
                self.add_event(conn, "snapshot.deleted", snapshot.workspace_id, snapshot.owner,
                               {"snapshot_id": snapshot.id, "name": snapshot.name})

    # -- tokens ---------------------------------------------------------------------------------

    def insert_token(self, token: Token, token_hash: str) -> None:
        row = _encode({f.name: getattr(token, f.name) for f in fields(Token)}, set(), _TOKEN_TIMES)
        row["hash"] = token_hash
        row["admin"] = int(token.admin)
        with self.transaction() as conn:
            self._insert(conn, "tokens", row)

    def token_by_hash(self, token_hash: str) -> tuple[Token, str] | None:
        rows = self._query("SELECT * FROM tokens WHERE hash = ?", (token_hash,))
        return (_token(rows[0]), rows[0]["hash"]) if rows else None

    def touch_token(self, token_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (to_text(utcnow()), token_id))

    def page_tokens(self, user: str | None = None, *, limit: int, cursor: str | None = None) -> Page[Token]:
        """One user's tokens (everyone's with None), oldest first."""
        where, params = equal_to(user=user)
        return self.read_page("tokens", where, params, TOKEN_ORDER, limit, cursor, _token)

    def get_token(self, token_id: str) -> Token | None:
        rows = self._query("SELECT * FROM tokens WHERE id = ?", (token_id,))
        return _token(rows[0]) if rows else None

    def revoke_token(self, token_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                         (to_text(utcnow()), token_id))

    # -- events ---------------------------------------------------------------------------------

    def list_events(self, since: int = 0, owner: str | None = None, workspace_id: str | None = None,
                    types: Sequence[str] = (), limit: int = 1000) -> list[Event]:
        where, params = _event_filters(since, owner, workspace_id, types)
        rows = self._query(f"SELECT * FROM events{where_clause(where)} ORDER BY id LIMIT ?", (*params, limit))
        return [_event(r) for r in rows]

    def page_events(self, since: int = 0, owner: str | None = None, workspace_id: str | None = None,
                    types: Sequence[str] = (), *, limit: int) -> Page[Event]:
        """The events after `since`, oldest first; the next page's cursor names the last one's id."""
        where, params = _event_filters(since, owner, workspace_id, types)
        return self.read_page("events", where, params, EVENT_ORDER, limit, None, _event)

    def last_event_id(self) -> int:
        """The id of the newest event ever recorded (0 before the first), pruned or not."""
        rows = self._query("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
        return rows[0][0] if rows else 0

    def pruned_through(self) -> int:
        """Every event with an id up to this one has been pruned (ids have no other holes)."""
        oldest = self._query("SELECT min(id) FROM events")[0][0]
        return self.last_event_id() if oldest is None else oldest - 1

    def prune_events(self, before: datetime) -> int:
        """Delete events older than `before`; returns how many."""
        with self.transaction() as conn:
            return conn.execute("DELETE FROM events WHERE time < ?", (to_text(before),)).rowcount

    def add_event_once(self, type: str, workspace_id: str, owner: str, payload: dict[str, Any]) -> Event | None:
        """Record an event unless the workspace already has one of this type with this exact payload."""
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM events WHERE workspace_id = ? AND type = ? AND payload = ? LIMIT 1",
                            (workspace_id, type, json.dumps(payload))).fetchone():
                return None
            return self.add_event(conn, type, workspace_id, owner, payload)


class _ReadConnection(sqlite3.Connection):
    """A thread's read connection (a subclass only to be weakly referenced)."""


def _workspace_filters(owner: str | None, status: str | None,
                       labels: dict[str, str] | None) -> tuple[list[str], list[Any]]:
    where, params = equal_to(owner=owner, status=status)
    for key, value in (labels or {}).items():
        where.append("json_extract(labels, ?) = ?")
        params.extend([f'$."{key}"', value])
    return where, params


def _event_filters(since: int, owner: str | None, workspace_id: str | None,
                   types: Sequence[str]) -> tuple[list[str], list[Any]]:
    where, params = equal_to(owner=owner, workspace_id=workspace_id)
    where.append("id > ?")
    params.append(since)
    if types:  # exact types, or a family as 'workspace.*'
        where.append("(" + " OR ".join("type LIKE ? ESCAPE '\\'" if t.endswith(".*") else "type = ?"
                                       for t in types) + ")")
        params.extend(_like_prefix(t[:-1]) if t.endswith(".*") else t for t in types)
    return where, params


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _op_payload(operation: Operation) -> dict[str, Any]:
    return {"operation_id": operation.id, "type": operation.type, "status": operation.status.value,
            "error": operation.error, "workspace_name": operation.workspace_name}
