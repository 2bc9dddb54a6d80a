"""The store: the source of truth for workspaces, operations, snapshots, tokens and events, each table's
queries over the database (vmhost/core/database.py: its connections, transactions, event publication).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from vmhost.core.database import Database
from vmhost.core.models import (
    Event,
    Operation,
    OperationStatus,
    Sharing,
    Snapshot,
    SnapshotStatus,
    SshKey,
    Token,
    Workspace,
    WorkspaceStatus,
    utcnow,
)
from vmhost.core.paging import Order, Page
from vmhost.core.rows import (
    equal_to,
    event_from_row,
    field_values,
    operation_columns,
    operation_from_row,
    snapshot_columns,
    snapshot_from_row,
    to_text,
    token_columns,
    token_from_row,
    where_clause,
    workspace_columns,
    workspace_from_row,
)
from vmhost.errors import (
    InvalidState,
    NameTaken,
    OperationInFlight,
    OperationNotFound,
    SshKeyTaken,
    WorkspaceNotFound,
)

IN_FLIGHT = (OperationStatus.PENDING.value, OperationStatus.RUNNING.value)

# How each collection is listed: its order, the id last to break ties (times are stored as text of one
# format, so they sort as they compare)
WORKSPACE_ORDER = Order("workspaces", {"created_at": str, "id": str})
OPERATION_ORDER = Order("operations", {"created_at": str, "id": str}, descending=True)
TOKEN_ORDER = Order("tokens", {"created_at": str, "id": str})
SNAPSHOT_ORDER = Order("snapshots", {"created_at": str, "id": str})
EVENT_ORDER = Order("events", {"id": int})


class Store(Database):
    """The database with the queries of each of its tables."""

    # -- workspaces -----------------------------------------------------------------------------

    def insert_workspace(self, workspace: Workspace, operation: Operation,
                         check: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """A new workspace and the operation that will build it, atomically. `check(conn)` runs first in
        the same transaction (writers are serialised), e.g. a quota check that raises to refuse."""
        row = workspace_columns(field_values(workspace))
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

    def get_workspace(self, workspace_id: str) -> Workspace:
        rows = self._query("SELECT * FROM workspaces WHERE id = ?", (workspace_id,))
        if not rows:
            raise WorkspaceNotFound(f"no workspace {workspace_id!r}")
        return workspace_from_row(rows[0])

    def find_workspace(self, owner: str, name: str) -> Workspace | None:
        rows = self._query("SELECT * FROM workspaces WHERE owner = ? AND name = ?", (owner, name))
        return workspace_from_row(rows[0]) if rows else None

    def find_workspaces_named(self, name: str) -> list[Workspace]:
        return [workspace_from_row(r) for r in self._query("SELECT * FROM workspaces WHERE name = ?", (name,))]

    def list_workspaces(self, owner: str | None = None, status: str | None = None,
                        labels: dict[str, str] | None = None) -> list[Workspace]:
        where, params = _workspace_filters(owner, status, labels)
        sql = f"SELECT * FROM workspaces{where_clause(where)} ORDER BY {WORKSPACE_ORDER.sql}"
        return [workspace_from_row(r) for r in self._query(sql, params)]

    def page_workspaces(self, owner: str | None = None, status: str | None = None,
                        labels: dict[str, str] | None = None, *, limit: int, cursor: str | None = None,
                        ) -> Page[Workspace]:
        where, params = _workspace_filters(owner, status, labels)
        where.append("pool IS NULL")  # the warm pool's workspaces are no one's yet (see vmhost.core.pools)
        return self.read_page("workspaces", where, params, WORKSPACE_ORDER, limit, cursor, workspace_from_row)

    def count_workspaces(self, owner: str | None = None) -> int:
        if owner is None:
            return self._query("SELECT count(*) FROM workspaces")[0][0]
        return self._query("SELECT count(*) FROM workspaces WHERE owner = ?", (owner,))[0][0]

    def count_by_node(self) -> dict[str, int]:
        return {row[0]: row[1] for row in self._query("SELECT node, count(*) FROM workspaces WHERE node IS NOT NULL "
                                                      "GROUP BY node")}

    def count_by_status(self) -> dict[str, int]:
        """Workspaces by status, without the warm pools' (see pool_entries)."""
        return {row[0]: row[1] for row in self._query("SELECT status, count(*) FROM workspaces WHERE pool IS NULL "
                                                      "GROUP BY status")}

    def owners_of(self, workspace_ids: Collection[str]) -> dict[str, str]:
        """The owner of each of these workspaces the database holds, by id."""
        ids = list(workspace_ids)
        marks = ", ".join("?" for _ in ids)
        return {row[0]: row[1] for row in self._query(f"SELECT id, owner FROM workspaces WHERE id IN ({marks})", ids)}

    # -- warm pools (see vmhost.core.pools) -----------------------------------------------------

    def pool_entries(self) -> list[Workspace]:
        """Every workspace waiting in a warm pool, oldest first."""
        rows = self._query(f"SELECT * FROM workspaces WHERE pool IS NOT NULL ORDER BY {WORKSPACE_ORDER.sql}")
        return [workspace_from_row(r) for r in rows]

    def add_pool_operation(self, operation: Operation) -> None:
        """Queue an operation on a workspace that is still in a warm pool (InvalidState once it was claimed:
        a refill that read it before a claim never removes what a create just got)."""
        with self.transaction() as conn:
            if conn.execute("SELECT 1 FROM workspaces WHERE id = ? AND pool IS NOT NULL",
                            (operation.workspace_id,)).fetchone() is None:
                raise InvalidState(f"workspace {operation.workspace_id} is no longer in a warm pool")
            self.add_operation(operation)

    def claim_pooled(self, pool: str, claimed: dict[str, Any], operation: Operation,
                     check: Callable[[sqlite3.Connection], None] | None = None) -> Workspace | None:
        """Give the oldest ready workspace of the pool `pool` (running, nothing in flight) the fields
        `claimed` (its owner, name, ...) and `operation` as its current operation, which is queued; None
        when none is ready. One UPDATE with a check of the row it changed, in one transaction with the
        quota `check` and the operation: exactly once, whatever runs in parallel or dies half-way."""
        row = workspace_columns({**claimed, "updated_at": utcnow()})
        row.update(pool=None, status=WorkspaceStatus.PROVISIONING.value, current_operation_id=operation.id)
        assignments = ", ".join(f"{key} = ?" for key in row)
        try:
            with self.transaction() as conn:
                if check is not None:
                    check(conn)
                chosen = conn.execute(
                    f"UPDATE workspaces SET {assignments} WHERE id = (SELECT id FROM workspaces WHERE pool = ? AND "
                    f"status = ? AND current_operation_id IS NULL ORDER BY {WORKSPACE_ORDER.sql} LIMIT 1) "
                    "AND pool = ? AND status = ? AND current_operation_id IS NULL RETURNING id",
                    (*row.values(), pool, WorkspaceStatus.RUNNING.value, pool, WorkspaceStatus.RUNNING.value),
                ).fetchall()
                if len(chosen) != 1:
                    return None
                workspace = workspace_from_row(
                    conn.execute("SELECT * FROM workspaces WHERE id = ?", (chosen[0][0],)).fetchone())
                operation.workspace_id = workspace.id
                self.add_event(conn, "workspace.created", workspace.id, workspace.owner,
                               {"name": workspace.name, "status": workspace.status.value,
                                "template": workspace.template, "pooled": True})
                self._insert_operation(conn, operation)
        except sqlite3.IntegrityError as exc:
            raise NameTaken(f"a workspace named {claimed.get('name')!r} already exists for "
                            f"{claimed.get('owner')}") from exc
        return workspace

    def update_workspace(self, workspace_id: str, **changes: Any) -> Workspace:
        """Change fields of a workspace; a status change is recorded as an event."""
        with self.transaction() as conn:
            rows = conn.execute("SELECT * FROM workspaces WHERE id = ?", (workspace_id,)).fetchall()
            if not rows:
                raise WorkspaceNotFound(f"no workspace {workspace_id!r}")
            before = workspace_from_row(rows[0])
            changes["updated_at"] = utcnow()
            row = workspace_columns(changes)
            assignments = ", ".join(f"{key} = ?" for key in row)
            try:
                conn.execute(f"UPDATE workspaces SET {assignments} WHERE id = ?", (*row.values(), workspace_id))
            except sqlite3.IntegrityError as exc:
                raise NameTaken(f"a workspace named {changes.get('name')!r} already exists for {before.owner}") \
                    from exc
            after = workspace_from_row(
                conn.execute("SELECT * FROM workspaces WHERE id = ?", (workspace_id,)).fetchone())
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
            conn.execute("DELETE FROM port_sharing WHERE workspace_id = ?", (workspace_id,))
            self.add_event(conn, "workspace.deleted", workspace_id, row["owner"], {"name": row["name"]})

    def expired_workspaces(self, now: datetime) -> list[Workspace]:
        rows = self._query(
            "SELECT * FROM workspaces WHERE expires_at IS NOT NULL AND expires_at <= ? AND status != ?",
            (to_text(now), WorkspaceStatus.DELETING.value))
        return [workspace_from_row(r) for r in rows]

    def workspaces_on_node(self, node: str) -> list[Workspace]:
        rows = self._query("SELECT * FROM workspaces WHERE node = ? AND status != ? ORDER BY created_at, id",
                           (node, WorkspaceStatus.DELETING.value))
        return [workspace_from_row(r) for r in rows]

    def hold_workspace(self, workspace_id: str, operation_id: str) -> bool:
        """Make `operation_id` the workspace's current operation, unless one is in flight on it: then False."""
        with self.transaction() as conn:
            held = conn.execute("UPDATE workspaces SET current_operation_id = ? WHERE id = ? AND "
                                "(current_operation_id IS NULL OR current_operation_id NOT IN "
                                "(SELECT id FROM operations WHERE status IN (?, ?)))",
                                (operation_id, workspace_id, *IN_FLIGHT)).rowcount
        return bool(held)

    def release_workspace(self, workspace_id: str, operation_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE workspaces SET current_operation_id = NULL WHERE id = ? AND current_operation_id = ?",
                         (workspace_id, operation_id))

    def settled_on_node(self, node: str) -> list[Workspace]:
        """The workspaces on one node with no operation in flight and no create or delete under way."""
        rows = self._query("SELECT * FROM workspaces WHERE node = ? AND current_operation_id IS NULL AND status IN "
                           "(?, ?, ?)", (node, WorkspaceStatus.RUNNING.value, WorkspaceStatus.STOPPED.value,
                                          WorkspaceStatus.UNREACHABLE.value))
        return [workspace_from_row(r) for r in rows]

    def idle_candidates(self) -> list[Workspace]:
        """Running workspaces with an idle timeout and no operation in flight: those the idle stop judges."""
        rows = self._query("SELECT * FROM workspaces WHERE status = ? AND idle_timeout_seconds > 0 "
                           "AND current_operation_id IS NULL", (WorkspaceStatus.RUNNING.value,))
        return [workspace_from_row(r) for r in rows]

    def scheduled_workspaces(self) -> list[Workspace]:
        """Running or stopped workspaces with an autostart or an autostop and no operation in flight:
        those the scheduler judges."""
        rows = self._query("SELECT * FROM workspaces WHERE (autostart IS NOT NULL OR autostop IS NOT NULL) "
                           "AND status IN (?, ?) AND current_operation_id IS NULL",
                           (WorkspaceStatus.RUNNING.value, WorkspaceStatus.STOPPED.value))
        return [workspace_from_row(r) for r in rows]

    def fire_schedule(self, workspace_id: str, fired: dict[str, datetime], operation: Operation | None) -> None:
        """Record the due times acted on (`fired`: "autostart" or "autostop" -> its due time) and queue
        the operation that acts, if any, atomically: a crash never records one without the other. Leaves
        `updated_at` alone (it is not a change a user made, and the idle stop counts it as activity)."""
        with self.transaction() as conn:
            if operation is not None:
                self.add_operation(operation)
            for which, due in fired.items():
                column = {"autostart": "autostart_fired_at", "autostop": "autostop_fired_at"}[which]
                conn.execute(f"UPDATE workspaces SET {column} = ? WHERE id = ?", (to_text(due), workspace_id))

    # -- operations -----------------------------------------------------------------------------

    def _insert_operation(self, conn: sqlite3.Connection, operation: Operation) -> None:
        self._insert(conn, "operations",
                     operation_columns(field_values(operation)))
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
        return operation_from_row(rows[0])

    def list_operations(self, workspace_id: str, status: str) -> list[Operation]:
        """A workspace's operations in one status, newest first."""
        rows = self._query(f"SELECT * FROM operations WHERE workspace_id = ? AND status = ? "
                           f"ORDER BY {OPERATION_ORDER.sql}", (workspace_id, status))
        return [operation_from_row(r) for r in rows]

    def page_operations(self, owner: str | None = None, workspace_id: str | None = None, type: str | None = None,
                        status: str | None = None, *, limit: int, cursor: str | None = None) -> Page[Operation]:
        """Newest first."""
        where, params = equal_to(owner=owner, workspace_id=workspace_id, type=type, status=status)
        return self.read_page("operations", where, params, OPERATION_ORDER, limit, cursor, operation_from_row)

    def operations_with_status(self, *statuses: OperationStatus) -> list[Operation]:
        marks = ", ".join("?" for _ in statuses)
        rows = self._query(f"SELECT * FROM operations WHERE status IN ({marks}) ORDER BY created_at",
                           [s.value for s in statuses])
        return [operation_from_row(r) for r in rows]

    def claim_operation(self, operation_id: str) -> Operation | None:
        """Move a pending operation to running; None if someone else already did. Exactly-once."""
        with self.transaction() as conn:
            cursor = conn.execute(
                "UPDATE operations SET status = ?, started_at = ?, attempts = attempts + 1 "
                "WHERE id = ? AND status = ?",
                (OperationStatus.RUNNING.value, to_text(utcnow()), operation_id, OperationStatus.PENDING.value))
            if cursor.rowcount != 1:
                return None
            operation = operation_from_row(
                conn.execute("SELECT * FROM operations WHERE id = ?", (operation_id,)).fetchone())
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
            operation = operation_from_row(
                conn.execute("SELECT * FROM operations WHERE id = ?", (operation_id,)).fetchone())
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
                             snapshot_columns(field_values(snapshot)))
                self.add_operation(operation)
        except sqlite3.IntegrityError as exc:
            raise NameTaken(f"workspace {operation.workspace_name!r} already has a snapshot named "
                            f"{snapshot.name!r}") from exc

    def list_snapshots(self, workspace_id: str | None = None) -> list[Snapshot]:
        if workspace_id is None:
            return [snapshot_from_row(r) for r in self._query(f"SELECT * FROM snapshots ORDER BY {SNAPSHOT_ORDER.sql}")]
        rows = self._query(f"SELECT * FROM snapshots WHERE workspace_id = ? ORDER BY {SNAPSHOT_ORDER.sql}",
                           (workspace_id,))
        return [snapshot_from_row(r) for r in rows]

    def page_snapshots(self, workspace_id: str, *, limit: int, cursor: str | None = None) -> Page[Snapshot]:
        """A workspace's snapshots, oldest first."""
        return self.read_page("snapshots", ["workspace_id = ?"], [workspace_id], SNAPSHOT_ORDER, limit, cursor,
                              snapshot_from_row)

    def find_snapshot(self, workspace_id: str, ref: str) -> Snapshot | None:
        """A workspace's snapshot by id or by name."""
        rows = self._query("SELECT * FROM snapshots WHERE workspace_id = ? AND (id = ? OR name = ?)",
                           (workspace_id, ref, ref))
        return snapshot_from_row(rows[0]) if rows else None

    def images_in_use(self, excluding: str | None = None) -> set[str]:
        """The images that workspaces (but the workspace `excluding`) run from."""
        return {row["image"] for row in self._query("SELECT DISTINCT image FROM workspaces WHERE id IS NOT ?",
                                                    (excluding,))}

    def get_snapshot(self, snapshot_id: str) -> Snapshot | None:
        rows = self._query("SELECT * FROM snapshots WHERE id = ?", (snapshot_id,))
        return snapshot_from_row(rows[0]) if rows else None

    def update_snapshot(self, snapshot_id: str, **changes: Any) -> None:
        row = snapshot_columns(changes)
        with self.transaction() as conn:
            conn.execute(f"UPDATE snapshots SET {', '.join(f'{key} = ?' for key in row)} WHERE id = ?",
                         (*row.values(), snapshot_id))
            if changes.get("status") == SnapshotStatus.READY:
                snapshot = snapshot_from_row(
                    conn.execute("SELECT * FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone())
                self.add_event(conn, "snapshot.created", snapshot.workspace_id, snapshot.owner,
                               {"snapshot_id": snapshot.id, "name": snapshot.name, "size_bytes": snapshot.size_bytes})

    def delete_snapshot(self, snapshot: Snapshot) -> None:
        with self.transaction() as conn:
            if conn.execute("DELETE FROM snapshots WHERE id = ?", (snapshot.id,)).rowcount:
                self.add_event(conn, "snapshot.deleted", snapshot.workspace_id, snapshot.owner,
                               {"snapshot_id": snapshot.id, "name": snapshot.name})

    # -- tokens ---------------------------------------------------------------------------------

    def insert_token(self, token: Token, token_hash: str) -> None:
        row = token_columns(field_values(token))
        row["hash"] = token_hash
        row["admin"] = int(token.admin)
        with self.transaction() as conn:
            self._insert(conn, "tokens", row)

    def token_by_hash(self, token_hash: str) -> tuple[Token, str] | None:
        rows = self._query("SELECT * FROM tokens WHERE hash = ?", (token_hash,))
        return (token_from_row(rows[0]), rows[0]["hash"]) if rows else None

    def touch_token(self, token_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (to_text(utcnow()), token_id))

    def page_tokens(self, user: str | None = None, *, limit: int, cursor: str | None = None) -> Page[Token]:
        """One user's tokens (everyone's with None), oldest first."""
        where, params = equal_to(user=user)
        return self.read_page("tokens", where, params, TOKEN_ORDER, limit, cursor, token_from_row)

    def get_token(self, token_id: str) -> Token | None:
        rows = self._query("SELECT * FROM tokens WHERE id = ?", (token_id,))
        return token_from_row(rows[0]) if rows else None

    # -- SSH keys -------------------------------------------------------------------------------

    def insert_ssh_key(self, key: SshKey, user_limit: int) -> bool:
        """Store a key unless its user already has `user_limit` (then False). SshKeyTaken when the same key
        is registered already (by anyone)."""
        try:
            with self.transaction() as conn:
                if conn.execute("SELECT count(*) FROM ssh_keys WHERE user = ?", (key.user,)).fetchone()[0] \
                        >= user_limit:
                    return False
                conn.execute("INSERT INTO ssh_keys (id, user, public_key, fingerprint, comment, admin, created_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (key.id, key.user, key.public_key, key.fingerprint, key.comment, int(key.admin),
                              to_text(key.created_at)))
        except sqlite3.IntegrityError:
            raise SshKeyTaken(f"the key {key.fingerprint} is already registered (a key belongs to one user); "
                              "`vmhost keys ls` lists yours") from None
        return True

    def ssh_keys(self, user: str | None) -> list[SshKey]:
        """One user's keys (everyone's with None), oldest first."""
        where, params = equal_to(user=user)
        rows = self._query(f"SELECT * FROM ssh_keys{where_clause(where)} ORDER BY created_at, id", params)
        return [_ssh_key(row) for row in rows]

    def get_ssh_key(self, key_id: str) -> SshKey | None:
        rows = self._query("SELECT * FROM ssh_keys WHERE id = ?", (key_id,))
        return _ssh_key(rows[0]) if rows else None

    def find_ssh_key(self, public_key: str) -> SshKey | None:
        rows = self._query("SELECT * FROM ssh_keys WHERE public_key = ?", (public_key,))
        return _ssh_key(rows[0]) if rows else None

    def delete_ssh_key(self, key_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM ssh_keys WHERE id = ?", (key_id,))

    def revoke_token(self, token_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                         (to_text(utcnow()), token_id))

    # -- port sharing ---------------------------------------------------------------------------

    def port_sharing(self, workspace_id: str) -> dict[int, Sharing]:
        """The workspace's ports shared beyond their owner (a port not named here is private)."""
        rows = self._query("SELECT port, level FROM port_sharing WHERE workspace_id = ?", (workspace_id,))
        return {row[0]: Sharing(row[1]) for row in rows}

    def set_port_sharing(self, workspace_id: str, port: int, level: Sharing, by: str) -> None:
        with self.transaction() as conn:
            if level == Sharing.PRIVATE:
                conn.execute("DELETE FROM port_sharing WHERE workspace_id = ? AND port = ?", (workspace_id, port))
            else:
                conn.execute("INSERT OR REPLACE INTO port_sharing (workspace_id, port, level, updated_at, updated_by) "
                             "VALUES (?, ?, ?, ?, ?)", (workspace_id, port, level.value, to_text(utcnow()), by))

    # -- events ---------------------------------------------------------------------------------

    def list_events(self, since: int = 0, owner: str | None = None, workspace_id: str | None = None,
                    types: Sequence[str] = (), limit: int = 1000) -> list[Event]:
        where, params = _event_filters(since, owner, workspace_id, types)
        rows = self._query(f"SELECT * FROM events{where_clause(where)} ORDER BY id LIMIT ?", (*params, limit))
        return [event_from_row(r) for r in rows]

    def page_events(self, since: int = 0, owner: str | None = None, workspace_id: str | None = None,
                    types: Sequence[str] = (), *, limit: int) -> Page[Event]:
        """The events after `since`, oldest first; the next page's cursor names the last one's id."""
        where, params = _event_filters(since, owner, workspace_id, types)
        return self.read_page("events", where, params, EVENT_ORDER, limit, None, event_from_row)

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


def _ssh_key(row: sqlite3.Row) -> SshKey:
    return SshKey(id=row["id"], user=row["user"], public_key=row["public_key"], fingerprint=row["fingerprint"],
                  comment=row["comment"], admin=bool(row["admin"]),
                  created_at=datetime.fromisoformat(row["created_at"]))
