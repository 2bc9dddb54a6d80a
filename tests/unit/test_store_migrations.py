"""The database: a new file gets the latest schema, and a file made by any older version of vmhost is
brought up to date with its rows kept and a backup written first."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlite_utils import Database

from vmhost.core import migrations
from vmhost.core.models import OperationStatus, WorkspaceStatus
from vmhost.core.store import Store

MIGRATIONS = [m.name for m in migrations.migrations.pending(Database(memory=True))]
CREATED = "2026-01-01T00:00:00.000+00:00"


def test_a_new_database_has_the_latest_schema_and_no_backup(tmp_path: Path) -> None:
    store = Store(tmp_path / "vmhost.db")
    assert store.schema_version == migrations.latest_version() == len(MIGRATIONS)
    assert store.backup_written is None
    assert (store.list_workspaces(), store.page_operations(limit=10).items, store.page_tokens(limit=10).items) == (
        [], [], [])
    store.close()


@pytest.mark.parametrize("version", range(1, len(MIGRATIONS)))
def test_an_older_schema_is_migrated_keeping_its_rows(version: int, tmp_path: Path) -> None:
    path = tmp_path / "vmhost.db"
    old = Database(sqlite3.connect(path))
    migrations.migrations.apply(old, stop_before=MIGRATIONS[version])
    old.execute("INSERT INTO workspaces (id, name, owner, template, image, status, created_at, updated_at) "
                "VALUES ('ws_old', 'legacy', 'alice', 'base', 'img', 'stopped', ?, ?)", (CREATED, CREATED))
    old.execute("INSERT INTO operations (id, type, status, workspace_id, workspace_name, owner, requested_by, "
                "created_at) VALUES ('op_old', 'stop', 'succeeded', 'ws_old', 'legacy', 'alice', 'alice', ?)",
                (CREATED,))
    old.execute("INSERT INTO tokens (id, user, hash, created_at) VALUES ('tok_old', 'alice', 'h', ?)", (CREATED,))
    old.conn.commit()
    old.conn.close()

    store = Store(path)
    assert store.schema_version == migrations.latest_version()
    workspace = store.get_workspace("ws_old")
    assert (workspace.name, workspace.owner, workspace.status, workspace.capabilities) == (
        "legacy", "alice", WorkspaceStatus.STOPPED, [])
    assert store.get_operation("op_old").status == OperationStatus.SUCCEEDED
    assert [t.id for t in store.page_tokens(limit=10).items] == ["tok_old"]
    assert store.update_workspace("ws_old", status=WorkspaceStatus.RUNNING).status == WorkspaceStatus.RUNNING
    assert store.backup_written is not None and store.backup_written.name.startswith(f"vmhost.db.bak-{version}-")
    store.close()
