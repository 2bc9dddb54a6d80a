"""The database on a full filesystem, and a database another process keeps locked: clear 503s or a
short wait, never a 500, nothing stored lost, and service back when the disk or the lock is freed."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import create_ws, wait_op

from faults.conftest import PrivateEngine, unique


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 2 MiB tmpfs of the test's own, unmounted afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="vmh-full-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(directory)], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
        directory.rmdir()


def fill(directory: Path) -> Path:
    """Fill the filesystem to the last byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def check_database(db_path: Path, token_ids: list[str], workspace_id: str) -> None:
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in db.execute("SELECT id FROM tokens")}
        assert set(token_ids) <= stored, f"tokens lost: {set(token_ids) - stored}"
        assert db.execute("SELECT status FROM workspaces WHERE id = ?", (workspace_id,)).fetchone() == ("running",)
    db.close()


def fill_until_refused(client: httpx.Client, directory: Path, token_ids: list[str]) -> tuple[Path, dict[str, Any]]:
    """Fill the database's filesystem, then write tokens until the database's own free pages run out
    too; returns the filler file and the refusal. Tokens stored on the way are added to `token_ids`."""
    filler = fill(directory)
    for number in range(2000):
        response = client.post("/api/v1/tokens", json={"user": f"filler{number}", "name": "x" * 100})
        assert response.status_code < 500 or response.status_code == 503, response.text
        if response.status_code == 503:
            return filler, response.json()
        token_ids.append(response.json()["token"]["id"])
    raise AssertionError("writes never failed on a full disk")


def test_full_disk_writes_answer_503_disk_full_reads_work_nothing_lost_and_writes_resume(
        fault_daemon: Any, engine: PrivateEngine, small_disk: Path) -> None:
    db_path = small_disk / "vmhost.db"
    daemon = fault_daemon({"VMHOST_DB_PATH": str(db_path)})
    with daemon.client(timeout=20) as client:
        workspace = create_ws(client, unique("disk"))["workspace"]
        token_ids = [client.post("/api/v1/tokens", json={"user": f"u{i}"}).json()["token"]["id"] for i in range(3)]
        filler, refused = fill_until_refused(client, small_disk, token_ids)
        assert refused["code"] == "store_unavailable"
        assert "disk is full" in refused["detail"], refused["detail"]

        for response in (client.post("/api/v1/workspaces", json={"name": unique("disk"), "template": "base"}),
                         client.post(f"/api/v1/workspaces/{workspace['id']}/actions/stop")):
            assert response.status_code == 503, response.text
            assert "disk is full" in response.json()["detail"]
        listed = client.get("/api/v1/workspaces")
        assert listed.status_code == 200 and [w["id"] for w in listed.json()["items"]] == [workspace["id"]]
        assert client.get(f"/api/v1/workspaces/{workspace['id']}").json()["status"] == "running"
        check_database(db_path, token_ids, workspace["id"])

        filler.unlink()

        assert client.post("/api/v1/tokens", json={"user": "after"}).status_code == 201
        assert wait_op(client, client.post(f"/api/v1/workspaces/{workspace['id']}/actions/stop").json()["id"]
                       )["status"] == "succeeded"
        assert wait_op(client, client.post(f"/api/v1/workspaces/{workspace['id']}/actions/start").json()["id"]
                       )["status"] == "succeeded"
        create_ws(client, unique("disk"))
    check_database(db_path, token_ids, workspace["id"])
    assert daemon.process is not None and daemon.process.poll() is None


def test_an_operation_ending_on_a_full_disk_is_recorded_once_there_is_room_without_a_restart(
        fault_daemon: Any, engine: PrivateEngine, small_disk: Path) -> None:
    daemon = fault_daemon({"VMHOST_DB_PATH": str(small_disk / "vmhost.db")})
    with daemon.client(timeout=20) as client:
        workspace = create_ws(client, unique("disk"))["workspace"]
        # a command that ends when told to, and prints nothing (output lines are stored as events)
        operation = client.post(f"/api/v1/workspaces/{workspace['id']}/commands", json={
            "argv": ["sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.1; done"]}).json()
        deadline = time.monotonic() + 30  # started (its claim written) before the disk fills
        while client.get(f"/api/v1/operations/{operation['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline, "the command did not start"
            time.sleep(0.1)
        filler, _ = fill_until_refused(client, small_disk, [])
        with engine.client() as docker_client:
            docker_client.containers.get(workspace["connection"]["container_id"]).exec_run(["touch", "/tmp/go"])
        time.sleep(2)  # the command has ended; its end cannot be written
        assert client.get(f"/api/v1/operations/{operation['id']}").json()["status"] == "running"

        filler.unlink()
        ended = wait_op(client, operation["id"], timeout=30)
        assert ended["status"] == "succeeded" and ended["result"]["exit_code"] == 0, ended
    assert daemon.process is not None and daemon.process.poll() is None


def hold_write_lock(db_path: Path, seconds: float, locked: threading.Event) -> None:
    """Another process's long write transaction (here: another connection) on the daemon's database."""
    db = sqlite3.connect(db_path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO events (type, time, payload) VALUES ('test.lock', '2020-01-01T00:00:00', '{}')")
        locked.set()
        time.sleep(seconds)
        db.execute("COMMIT")
    finally:
        db.close()


def test_database_locked_by_another_writer_requests_wait_and_succeed_no_5xx(
        fault_daemon: Any, engine: PrivateEngine) -> None:
    daemon = fault_daemon()
    with daemon.client(timeout=60) as client:
        workspaces = [create_ws(client, unique("lock"))["workspace"] for _ in range(2)]
    locked = threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(daemon.db_path, 3, locked))
    holder.start()
    assert locked.wait(10)

    def request(kind: str) -> int:
        with daemon.client(timeout=60) as client:
            if kind == "token":
                return client.post("/api/v1/tokens", json={"user": "locked"}).status_code
            if kind == "stop":
                return client.post(f"/api/v1/workspaces/{workspaces[0]['id']}/actions/stop").status_code
            if kind == "create":
                return client.post("/api/v1/workspaces", json={"name": unique("lock"), "template": "base"}
                                   ).status_code
            return client.get("/api/v1/workspaces").status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(request, ["token", "stop", "create", "list", "token", "list", "create", "list"]))
    holder.join()
    assert statuses == [201, 202, 202, 200, 201, 200, 202, 200], statuses
    with daemon.client(timeout=60) as client:
        for operation in client.get("/api/v1/operations").json()["items"]:
            assert wait_op(client, operation["id"])["status"] == "succeeded", operation


@pytest.mark.slow
def test_database_locked_past_the_busy_timeout_answers_503_saying_so_then_recovers(
        fault_daemon: Any, engine: PrivateEngine) -> None:
    daemon = fault_daemon()
    locked = threading.Event()
    holder = threading.Thread(target=hold_write_lock, args=(daemon.db_path, 40, locked))
    holder.start()
    try:
        assert locked.wait(10)
        with daemon.client(timeout=60) as client:
            response = client.post("/api/v1/tokens", json={"user": "locked"})
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "store_unavailable"
            assert "locked" in response.json()["detail"], response.json()
    finally:
        holder.join()
    with daemon.client(timeout=60) as client:
        assert client.post("/api/v1/tokens", json={"user": "after"}).status_code == 201
