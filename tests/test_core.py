"""The core without the daemon: a cron job or worker drives the orchestrator directly, and the store
keeps its promises (migrations with a backup, history that outlives workspaces)."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import docker
import pytest
from conftest import umask
from sqlite_utils import Database

from vmhost.core import migrations
from vmhost.core.models import SYSTEM, Caller, OperationStatus, WorkspaceStatus
from vmhost.core.orchestrator import Orchestrator, WorkspaceRequest
from vmhost.core.store import Store
from vmhost.errors import InvalidInput, NameTaken, OperationInFlight, WorkspaceNotFound


def test_orchestrator_drives_the_lifecycle_without_the_daemon(orchestrator: Orchestrator,
                                                              docker_client: docker.DockerClient) -> None:
    alice = Caller(user="alice")
    workspace, operation = orchestrator.create(alice, WorkspaceRequest(name="job", labels={"by": "cron"}))
    done = orchestrator.wait_operation(alice, operation.id, timeout=60)
    assert done.status == OperationStatus.SUCCEEDED, done.error
    workspace = orchestrator.get(alice, "job")
    assert workspace.status == WorkspaceStatus.RUNNING
    container = docker_client.containers.get(workspace.container_id)
    assert container.labels["vmhost.owner"] == "alice"
    assert container.labels["vmhost.instance"] == orchestrator.instance

    with pytest.raises(NameTaken):
        orchestrator.create(alice, WorkspaceRequest(name="job"))
    # another user may use the same name, and cannot see alice's
    bob = Caller(user="bob")
    with pytest.raises(WorkspaceNotFound):
        orchestrator.get(bob, "job")
    assert orchestrator.list(bob).items == []
    assert [w.name for w in orchestrator.list(SYSTEM).items] == ["job"]

    stop = orchestrator.stop(alice, "job")
    with pytest.raises(OperationInFlight):
        orchestrator.start(alice, "job")
    assert orchestrator.wait_operation(alice, stop.id, 60).status == OperationStatus.SUCCEEDED
    assert docker_client.containers.get(workspace.container_id).status == "exited"

    delete = orchestrator.delete(alice, workspace.id)
    assert orchestrator.wait_operation(alice, delete.id, 60).status == OperationStatus.SUCCEEDED
    with pytest.raises(WorkspaceNotFound):
        orchestrator.get(alice, "job")
    history = orchestrator.list_operations(alice, workspace=workspace.id)
    assert [o.type for o in history.items] == ["delete", "stop", "create"]


def test_janitor_sweep_expires_workspaces_past_their_ttl(orchestrator: Orchestrator,
                                                         docker_client: docker.DockerClient) -> None:
    alice = Caller(user="alice")
    workspace, operation = orchestrator.create(alice, WorkspaceRequest(name="short", ttl_seconds=1))
    assert orchestrator.wait_operation(alice, operation.id, 60).status == OperationStatus.SUCCEEDED
    import time

    time.sleep(1.1)
    expired = orchestrator.expire_due()
    assert [o.type for o in expired] == ["expire"]
    assert orchestrator.wait_operation(alice, expired[0].id, 60).status == OperationStatus.SUCCEEDED
    assert orchestrator.list(alice).items == []
    assert not docker_client.containers.list(all=True, filters={"label": f"vmhost.workspace={workspace.id}"})


def test_core_validates_input_like_the_api(orchestrator: Orchestrator) -> None:
    alice = Caller(user="alice")
    for bad in (WorkspaceRequest(name="Bad_Name"), WorkspaceRequest(name="ok", template="nope"),
                WorkspaceRequest(name="ok", ttl_seconds=-5), WorkspaceRequest(name="ok", labels={"bad key": "v"}),
                WorkspaceRequest(name="ok", env={"1X": "v"}), WorkspaceRequest(name="ok", repo_url="--upload-pack=x"),
                WorkspaceRequest(name="ok", cpus=10_000)):
        with pytest.raises(InvalidInput):
            orchestrator.create(alice, bad)
    assert orchestrator.list(SYSTEM).items == []


def test_upgrade_from_an_older_schema_backs_up_first_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "vmhost.db"
    with umask(0o022):  # SQLite makes files 0644 then
        old = Database(sqlite3.connect(path))
        migrations.migrations.apply(old, stop_before="m002_events")
        old.execute("INSERT INTO workspaces (id, name, owner, template, image, status, created_at, updated_at) "
                    "VALUES ('ws_old', 'legacy', 'alice', 'base', 'img', 'stopped', '2026-01-01T00:00:00.000+00:00', "
                    "'2026-01-01T00:00:00.000+00:00')")
        old.conn.commit()
        old.conn.close()
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        store = Store(path)
    assert store.schema_version == migrations.latest_version()
    backup = store.backup_written
    assert backup is not None and backup.name.startswith("vmhost.db.bak-1-")
    assert [stat.S_IMODE(p.stat().st_mode) for p in (path, backup)] == [0o600, 0o600]
    assert store.get_workspace("ws_old").name == "legacy"
    assert store.list_events() == []
    with sqlite3.connect(backup) as copy:
        assert copy.execute("SELECT name FROM workspaces").fetchall() == [("legacy",)]
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert not copy.execute("SELECT name FROM sqlite_master WHERE name = 'events'").fetchall()
    store.close()

    # nothing pending: no new backup
    again = Store(path)
    assert again.backup_written is None
    assert len(list(tmp_path.glob("vmhost.db.bak-*"))) == 1
    again.close()


def test_a_new_database_needs_no_backup_and_uses_wal(tmp_path: Path) -> None:
    store = Store(tmp_path / "fresh.db")
    assert store.backup_written is None
    assert store.db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
