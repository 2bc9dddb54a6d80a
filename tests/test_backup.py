"""vmhost db backup (online, through the daemon, while writes go on) and vmhost db restore (only with
the daemon stopped; integrity-checked; the old database kept as .bak)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from conftest import Daemon, create_ws

from vmhost.core.backup import check_database_file


def count(db: Path, table: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_backup_while_writes_go_on_is_consistent(make_daemon: Callable[..., Daemon], tmp_path: Path,
                                                 name: str) -> None:
    daemon = make_daemon()
    stop = threading.Event()
    failures: list[str] = []

    def create_tokens(worker: int) -> None:
        with daemon.client() as api:
            number = 0
            while not stop.is_set():
                response = api.post("/api/v1/tokens", json={"user": f"writer{worker}", "name": f"t{number}"})
                if response.status_code != 201:
                    failures.append(response.text)
                number += 1

    def create_workspaces() -> None:
        with daemon.client() as api:
            for number in range(4):
                create_ws(api, f"{name}-{number}", wait=False)

    writers = [threading.Thread(target=create_tokens, args=(i,)) for i in range(3)]
    writers.append(threading.Thread(target=create_workspaces))
    for thread in writers:
        thread.start()
    results = []
    try:
        for number in range(3):
            before = count(daemon.db_path, "tokens")
            target = tmp_path / f"backup-{number}.db"
            done = daemon.cli("db", "backup", str(target))
            after = count(daemon.db_path, "tokens")
            results.append((done, target, before, after))
    finally:
        stop.set()
        for thread in writers:
            thread.join(60)
    assert not failures

    for done, target, before, after in results:
        assert done.returncode == 0, done.stderr
        assert f"to {target}" in done.stdout
        assert oct(target.stat().st_mode & 0o777) == "0o600"
        counts = check_database_file(target)  # opens, and passes integrity_check
        assert before <= counts["tokens"] <= after
        with sqlite3.connect(target) as conn:
            # a workspace and its create operation and event are written in one transaction: never half
            assert conn.execute(
                "SELECT count(*) FROM workspaces w WHERE NOT EXISTS (SELECT 1 FROM operations o "
                "WHERE o.workspace_id = w.id AND o.type = 'create')").fetchone()[0] == 0
            assert conn.execute(
                "SELECT count(*) FROM workspaces w WHERE NOT EXISTS (SELECT 1 FROM events e "
                "WHERE e.workspace_id = w.id AND e.type = 'workspace.created')").fetchone()[0] == 0
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # one self-contained file
    assert results[-1][3] > results[0][2]  # writes really went on during the backups
    assert not list(daemon.db_path.parent.glob(".vmhost-backup-*"))  # the daemon's temporary copies are gone


def test_backup_into_a_directory_names_a_dated_file(daemon: Daemon, tmp_path: Path) -> None:
    done = daemon.cli("db", "backup", str(tmp_path))
    assert done.returncode == 0, done.stderr
    [written] = tmp_path.glob("vmhost-*.db")
    assert check_database_file(written)["workspaces"] >= 0


def test_backup_needs_an_admin(daemon: Daemon) -> None:
    with daemon.tcp(token=daemon.token("backup-user")) as client:
        response = client.get("/api/v1/admin/backup")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


def test_restore_refuses_while_the_daemon_answers_then_restores_when_stopped(
        make_daemon: Callable[..., Daemon], tmp_path: Path) -> None:
    daemon = make_daemon()
    kept_token = daemon.token("before-backup")
    backup = tmp_path / "backup.db"
    assert daemon.cli("db", "backup", str(backup)).returncode == 0
    later_token = daemon.token("after-backup")

    refused = daemon.cli("db", "restore", str(backup), "--db", str(daemon.db_path))
    assert refused.returncode == 4
    assert "stop it before restoring" in refused.stderr
    assert count(daemon.db_path, "tokens") == 2

    daemon.stop()
    restored = daemon.cli("db", "restore", str(backup), "--db", str(daemon.db_path))
    assert restored.returncode == 0, restored.stderr
    kept = Path(f"{daemon.db_path}.bak")
    assert f"kept as {kept}" in restored.stdout
    assert count(kept, "tokens") == 2  # the old database, write-ahead log included
    assert count(daemon.db_path, "tokens") == 1

    daemon.start()
    with daemon.tcp(token=kept_token) as client:
        assert client.get("/api/v1/workspaces").status_code == 200
    with daemon.tcp(token=later_token) as client:
        assert client.get("/api/v1/workspaces").status_code == 401  # written after the backup


def test_restore_refuses_a_damaged_or_foreign_file_and_leaves_the_database(daemon: Daemon, tmp_path: Path,
                                                                            api: httpx.Client) -> None:
    target = tmp_path / "vmhost.db"
    with sqlite3.connect(target) as conn:
        conn.execute("CREATE TABLE workspaces (id TEXT)")
        conn.execute("INSERT INTO workspaces VALUES ('ws_1')")
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE other (id TEXT)")
    stopped = {"VMHOST_SOCKET": str(tmp_path / "no-daemon.sock")}

    for source, message in ((garbage, "is not a readable SQLite database"), (foreign, "is not a vmhost database"),
                            (tmp_path / "missing.db", "is not a file")):
        refused = daemon.cli("db", "restore", str(source), "--db", str(target), env=stopped)
        assert refused.returncode == 2, refused.stderr
        assert message in refused.stderr
    assert count(target, "workspaces") == 1
    assert not Path(f"{target}.bak").exists()


def test_restore_into_a_new_place_keeps_no_bak_and_gives_the_directory_owner_the_file(tmp_path: Path) -> None:
    from vmhost.core.backup import restore

    source = tmp_path / "source.db"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE workspaces (id TEXT)")
    target = tmp_path / "state" / "vmhost.db"
    assert restore(source, target) is None
    assert count(target, "workspaces") == 0
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert target.stat().st_uid == target.parent.stat().st_uid
    assert not Path(f"{target}.bak").exists() and not Path(f"{target}.restoring").exists()
