"""Versioned schema migrations (sqlite-utils Migrations), with a backup before touching an existing
database. The schema version is the number of migrations applied."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from sqlite_utils import Database, Migrations

from vmhost.paths import private_file

migrations = Migrations("vmhost")


@migrations()
def m001_core(db: Database) -> None:
    db.execute("""
        CREATE TABLE workspaces (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            owner TEXT NOT NULL,
            template TEXT NOT NULL,
            image TEXT NOT NULL,
            status TEXT NOT NULL,
            status_reason TEXT,
            container_id TEXT,
            volume TEXT,
            repo_url TEXT,
            branch TEXT,
            cpus REAL,
            memory_mb INTEGER,
            ttl_seconds INTEGER,
            expires_at TEXT,
            labels TEXT NOT NULL DEFAULT '{}',
            env TEXT NOT NULL DEFAULT '{}',
            command TEXT NOT NULL DEFAULT '[]',
            provision TEXT NOT NULL DEFAULT '[]',
            plugins TEXT NOT NULL DEFAULT '[]',
            ports TEXT NOT NULL DEFAULT '{}',
            shell TEXT,
            current_operation_id TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (owner, name)
        )""")
    db.execute("CREATE INDEX workspaces_status ON workspaces (status)")
    db.execute("CREATE INDEX workspaces_expires_at ON workspaces (expires_at) WHERE expires_at IS NOT NULL")
    # No foreign key to workspaces: operation history outlives its workspace.
    db.execute("""
        CREATE TABLE operations (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            status TEXT NOT NULL,
            workspace_id TEXT,
            workspace_name TEXT,
            owner TEXT NOT NULL,
            requested_by TEXT NOT NULL,
            params TEXT NOT NULL DEFAULT '{}',
            result TEXT NOT NULL DEFAULT '{}',
            output TEXT NOT NULL DEFAULT '',
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        )""")
    db.execute("CREATE INDEX operations_workspace ON operations (workspace_id, status)")
    db.execute("CREATE INDEX operations_status ON operations (status)")
    db.execute("CREATE INDEX operations_owner_created ON operations (owner, created_at)")
    db.execute("""
        CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            user TEXT NOT NULL,
            name TEXT NOT NULL DEFAULT '',
            hash TEXT NOT NULL UNIQUE,
            scope TEXT NOT NULL DEFAULT 'write',
            admin INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            expires_at TEXT,
            last_used_at TEXT,
            revoked_at TEXT
        )""")
    db.execute("CREATE INDEX tokens_user ON tokens (user)")


@migrations()
def m002_events(db: Database) -> None:
    # AUTOINCREMENT: ids never come back after old events are pruned.
    db.execute("""
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            type TEXT NOT NULL,
            time TEXT NOT NULL,
            workspace_id TEXT,
            owner TEXT,
            payload TEXT NOT NULL DEFAULT '{}'
        )""")
    db.execute("CREATE INDEX events_workspace ON events (workspace_id, id)")


@migrations()
def m004_quotas_audit(db: Database) -> None:
    # per-user overrides of the configured quota defaults; NULL means "the default"
    db.execute("""
        CREATE TABLE quotas (
            user TEXT PRIMARY KEY,
            max_workspaces INTEGER,
            max_cpus REAL,
            max_memory_mb INTEGER,
            max_ttl_seconds INTEGER,
            max_snapshots INTEGER,
            updated_at TEXT NOT NULL,
            updated_by TEXT NOT NULL
        )""")
    # no foreign keys: the audit log outlives workspaces and tokens
    db.execute("""
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            time TEXT NOT NULL,
            user TEXT,
            door TEXT NOT NULL,
            address TEXT,
            method TEXT NOT NULL,
            path TEXT NOT NULL,
            action TEXT,
            workspace_id TEXT,
            workspace_name TEXT,
            status INTEGER NOT NULL,
            code TEXT
        )""")
    db.execute("CREATE INDEX audit_time ON audit (time)")
    db.execute("CREATE INDEX audit_user_time ON audit (user, time)")
    db.execute("CREATE INDEX audit_workspace ON audit (workspace_id)")
    db.execute("ALTER TABLE workspaces ADD COLUMN capabilities TEXT NOT NULL DEFAULT '[]'")


@migrations()
def m003_snapshots(db: Database) -> None:
    # No foreign key: deleting a workspace purges its snapshots' images and archives first.
    db.execute("""
        CREATE TABLE snapshots (
            id TEXT PRIMARY KEY,
            workspace_id TEXT NOT NULL,
            name TEXT NOT NULL,
            owner TEXT NOT NULL,
            status TEXT NOT NULL,
            image TEXT NOT NULL,
            archive TEXT NOT NULL,
            image_bytes INTEGER NOT NULL DEFAULT 0,
            volume_bytes INTEGER NOT NULL DEFAULT 0,
            operation_id TEXT,
            created_at TEXT NOT NULL,
            UNIQUE (workspace_id, name)
        )""")


@migrations()
def m005_workspaces_version(db: Database) -> None:
    # A counter that every write to `workspaces` bumps, whichever process makes it: the daemon reuses
    # its serialised workspace list until it moves, so writes to other tables keep that list.
    db.execute("CREATE TABLE table_versions (name TEXT PRIMARY KEY, version INTEGER NOT NULL)")
    db.execute("INSERT INTO table_versions (name, version) VALUES ('workspaces', 0)")
    for change in ("INSERT", "UPDATE", "DELETE"):
        db.execute(f"CREATE TRIGGER workspaces_version_{change.lower()} AFTER {change} ON workspaces BEGIN "
                   "UPDATE table_versions SET version = version + 1 WHERE name = 'workspaces'; END")


@migrations()
def m006_audit_sessions(db: Database) -> None:
    # the client a trusted proxy forwards (beside the peer's own address), and whether an entry is the
    # start or the end of a long-lived session (a shell, a streamed command)
    db.execute("ALTER TABLE audit ADD COLUMN forwarded_for TEXT")
    db.execute("ALTER TABLE audit ADD COLUMN phase TEXT")


@migrations()
def m007_quota_pids_snapshot_bytes(db: Database) -> None:
    db.execute("ALTER TABLE quotas ADD COLUMN max_pids INTEGER")
    db.execute("ALTER TABLE quotas ADD COLUMN max_snapshot_bytes INTEGER")


@migrations()
def m008_tokens_version(db: Database) -> None:
    # Like m005, for tokens: the daemon keeps checked tokens in memory only while this stands, so a
    # revocation (or any other change to a token), by this process or another, takes effect at once.
    db.execute("INSERT INTO table_versions (name, version) VALUES ('tokens', 0)")
    for change in ("INSERT", "UPDATE", "DELETE"):
        db.execute(f"CREATE TRIGGER tokens_version_{change.lower()} AFTER {change} ON tokens BEGIN "
                   "UPDATE table_versions SET version = version + 1 WHERE name = 'tokens'; END")


@migrations()
def m009_port_sharing(db: Database) -> None:
    # only ports shared beyond their owner have a row; no foreign key: deleting a workspace deletes its rows
    db.execute("""
        CREATE TABLE port_sharing (
            workspace_id TEXT NOT NULL,
            port INTEGER NOT NULL,
            level TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            updated_by TEXT NOT NULL,
            PRIMARY KEY (workspace_id, port)
        )""")


@migrations()
def m010_idle_stop(db: Database) -> None:
    # a workspace's idle timeout (NULL: never stopped for being idle), the last activity flushed from the
    # daemon's memory (vmhost.core.activity), and the per-user longest idle timeout
    db.execute("ALTER TABLE workspaces ADD COLUMN idle_timeout_seconds INTEGER")
    db.execute("ALTER TABLE workspaces ADD COLUMN last_activity_at TEXT")
    db.execute("ALTER TABLE quotas ADD COLUMN max_idle_timeout_seconds INTEGER")


@migrations()
def m011_workspace_node(db: Database) -> None:
    # the node a workspace runs on (or is pinned to) on a Swarm cluster; "local" on one Docker engine
    db.execute("ALTER TABLE workspaces ADD COLUMN node TEXT")


@migrations()
def m012_schedules(db: Database) -> None:
    # a workspace's autostart and autostop (vmhost.core.schedules), and the due time each last acted on
    # (or when it was set): after a restart, a start or stop missed meanwhile is made up once
    db.execute("ALTER TABLE workspaces ADD COLUMN autostart TEXT")
    db.execute("ALTER TABLE workspaces ADD COLUMN autostop TEXT")
    db.execute("ALTER TABLE workspaces ADD COLUMN autostart_fired_at TEXT")
    db.execute("ALTER TABLE workspaces ADD COLUMN autostop_fired_at TEXT")
    db.execute("CREATE INDEX workspaces_scheduled ON workspaces (id) "
               "WHERE autostart IS NOT NULL OR autostop IS NOT NULL")


@migrations()
def m013_pools(db: Database) -> None:
    # the template whose warm pool a workspace waits in (vmhost.core.pools); NULL once claimed, and for
    # every workspace made by a create
    db.execute("ALTER TABLE workspaces ADD COLUMN pool TEXT")
    db.execute("CREATE INDEX workspaces_pool ON workspaces (pool, status) WHERE pool IS NOT NULL")


@migrations()
def m014_ssh_keys(db: Database) -> None:
    # the public keys users log in to their workspaces with over SSH (vmhost.core.sshkeys); `admin` marks a
    # key an admin registered as an admin key, the only kind that may open another user's workspace
    db.execute("""
        CREATE TABLE ssh_keys (
            id TEXT PRIMARY KEY,
            user TEXT NOT NULL,
            public_key TEXT NOT NULL,
            fingerprint TEXT NOT NULL UNIQUE,
            comment TEXT NOT NULL,
            admin INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX ssh_keys_user ON ssh_keys (user, created_at)")


@migrations()
def m015_devcontainer(db: Database) -> None:
    # a workspace made from its repository's devcontainer.json (vmhost.core.devcontainer): what the file set
    # beyond the columns every workspace has, and where each setting came from
    db.execute("ALTER TABLE workspaces ADD COLUMN devcontainer INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE workspaces ADD COLUMN workdir TEXT")
    db.execute("ALTER TABLE workspaces ADD COLUMN user TEXT")
    db.execute("ALTER TABLE workspaces ADD COLUMN post_start TEXT NOT NULL DEFAULT '[]'")
    db.execute("ALTER TABLE workspaces ADD COLUMN post_attach TEXT NOT NULL DEFAULT '[]'")
    db.execute("ALTER TABLE workspaces ADD COLUMN port_labels TEXT NOT NULL DEFAULT '{}'")
    db.execute("ALTER TABLE workspaces ADD COLUMN display_name TEXT")
    db.execute("ALTER TABLE workspaces ADD COLUMN sources TEXT NOT NULL DEFAULT '{}'")


def schema_version(db: Database) -> int:
    return len(migrations.applied(db))


def latest_version() -> int:
    return len(migrations._migrations)


def backup(conn: sqlite3.Connection, target: Path) -> None:
    """A consistent copy of a live database (SQLite's online backup), as one self-contained file (0600)."""
    private_file(target)
    dest = sqlite3.connect(target)
    try:
        conn.backup(dest)
        dest.execute("PRAGMA journal_mode = DELETE")
    finally:
        dest.close()


def migrate(db: Database, path: Path | None) -> Path | None:
    """Apply pending migrations; back the database up first when it already holds a schema.

    Returns the backup's path when one was written."""
    pending = migrations.pending(db)
    if not pending:
        return None
    written = None
    version = schema_version(db)
    if path is not None and version > 0:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        written = path.with_name(f"{path.name}.bak-{version}-{stamp}")
        backup(db.conn, written)
    migrations.apply(db)
    return written
