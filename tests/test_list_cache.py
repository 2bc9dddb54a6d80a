"""The workspace list is served pre-serialised and reused while no workspace changes: any change,
through the daemon or by another process writing the database file, shows in the very next list."""

from __future__ import annotations

import httpx
from conftest import Daemon, all_items, create_ws, wait_op

from vmhost.core.store import Store


def listed(api: httpx.Client, workspace_id: str) -> dict:
    return next(w for w in all_items(api, "/api/v1/workspaces") if w["id"] == workspace_id)


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
        assert other.get("/api/v1/workspaces").json()["items"] == []
        assert name in {w["name"] for w in all_items(api, "/api/v1/workspaces")}
        assert other.get("/api/v1/workspaces").json()["items"] == []


def test_writes_to_other_tables_keep_the_list_and_workspace_writes_renew_it(orchestrator) -> None:
    from vmhost.core.models import Caller
    from vmhost.core.orchestrator import WorkspaceRequest
    from vmhost.daemon.listcache import WorkspaceListCache

    cache, builds = WorkspaceListCache(orchestrator.store), []

    def listing() -> bytes:
        def build() -> bytes:
            builds.append(1)
            return str(sorted(w.name for w in orchestrator.list(Caller(user="root", admin=True)).items)).encode()
        return cache.get("all", build)

    alice = Caller(user="alice")
    workspace, operation = orchestrator.create(alice, WorkspaceRequest(name="one"))
    orchestrator.wait_operation(alice, operation.id, timeout=60)  # no more writes to the workspace from it
    assert listing() == b"['one']" and len(builds) == 1
    orchestrator.create_token(alice)  # writes to other tables: a token, pruned events
    orchestrator.store.prune_events(workspace.created_at)
    assert listing() == b"['one']" and len(builds) == 1

    other = Store(orchestrator.store.path)  # a second process's connection
    try:
        other.update_workspace(workspace.id, name="renamed")
    finally:
        other.close()
    assert listing() == b"['renamed']" and len(builds) == 2


def test_requests_that_miss_together_build_the_list_once(orchestrator) -> None:
    import asyncio
    import time

    import anyio

    from vmhost.daemon.listcache import WorkspaceListCache

    cache, builds = WorkspaceListCache(orchestrator.store), []

    def build() -> bytes:
        builds.append(1)
        time.sleep(0.3)  # a thousand workspaces take a while: the others arrive meanwhile
        return b"[]"

    async def twenty_at_once() -> list[bytes]:
        return await asyncio.gather(*(cache.answer("all", build, anyio.CapacityLimiter(4)) for _ in range(20)))

    assert asyncio.run(twenty_at_once()) == [b"[]"] * 20
    assert len(builds) == 1
