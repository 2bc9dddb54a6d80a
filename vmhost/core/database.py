"""The database under the store: SQLite in WAL mode, its connections, transactions and event publication.

One writing connection, shared by the daemon's threads behind one lock (SQLite allows one writer at a
time anyway), and read connections of their own, so a read never waits for a write transaction (WAL
readers see the last commit). A thread inside a write transaction reads through the writer, to see its
own changes. Every change that others may wait on notifies `changed`; every event is handed to the
subscribers after its transaction commits.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from vmhost import paths
from vmhost.core import migrations
from vmhost.core.models import Event, utcnow
from vmhost.core.paging import Order, Page, check_limit
from vmhost.core.rows import to_text, where_clause
from vmhost.errors import StoreUnavailable

log = logging.getLogger(__name__)

BUSY_TIMEOUT = 30  # seconds a write waits for another process's lock on the database

T = TypeVar("T")


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


class Database:
    """The store's SQLite file (see the module's docstring); `Store` adds the queries of each table."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.in_memory = str(path) == ":memory:"  # one connection only: readers could not see it
        if not self.in_memory:
            _make_private(self.path)
        conn = self._connect()
        self.db = sqlite_utils.Database(conn)
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

    @staticmethod
    def _insert(conn: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))

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


class _ReadConnection(sqlite3.Connection):
    """A thread's read connection (a subclass only to be weakly referenced)."""
