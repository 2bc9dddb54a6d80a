"""The workspace list is served pre-serialised and reused while the database stands still: any change,
through the daemon or by another process writing the database file, shows in the very next list."""

from __future__ import annotations

import httpx
from conftest import Daemon, create_ws, wait_op

from vmhost.core.store import Store


def listed(api: httpx.Client, workspace_id: str) -> dict:
    return next(w for w in api.get("/api/v1/workspaces").json() if w["id"] == workspace_id)


def test_list_shows_a_change_through_the_daemon_at_once(api: httpx.Client, name: str) -> None:
    workspace = create_ws(api, name)["workspace"]
    assert listed(api, workspace["id"])["status"] == "running"
    assert api.get("/api/v1/workspaces").content == api.get("/api/v1/workspaces").content

    wait_op(api, api.post(f"/api/v1/workspaces/{workspace['id']}/actions/stop").json()["id"])
    assert listed(api, workspace["id"])["status"] == "stopped"


def test_list_shows_a_change_written_by_another_process(api: httpx.Client, daemon: Daemon, name: str) -> None:
    workspace = create_ws(api, name, labels={"stage": "one"})["workspace"]
    assert listed(api, workspace["id"])["labels"] == {"stage": "one"}

    store = Store(daemon.db_path)  # another connection, as a second process would have
    try:
        store.update_workspace(workspace["id"], labels={"stage": "two"})
    finally:
        store.close()
    assert listed(api, workspace["id"])["labels"] == {"stage": "two"}


def test_each_caller_gets_only_their_own_list(daemon: Daemon, api: httpx.Client, name: str) -> None:
    create_ws(api, name)
    with daemon.tcp(daemon.token(f"{name}-other")) as other:
        assert other.get("/api/v1/workspaces").json() == []
        assert name in {w["name"] for w in api.get("/api/v1/workspaces").json()}
        assert other.get("/api/v1/workspaces").json() == []
