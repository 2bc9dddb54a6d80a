"""Quotas per user: defaults from the settings, overrides by admins, refusals that say what is used,
and limits that hold when one user fires many creates at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
from conftest import Daemon, create_ws, wait_op

from vmhost.config import Settings
from vmhost.core.models import Caller, Workspace, WorkspaceStatus, utcnow
from vmhost.core.quotas import Quotas
from vmhost.core.store import Store
from vmhost.errors import QuotaExceeded

SMALL = {"VMHOST_QUOTA_MAX_WORKSPACES": "2", "VMHOST_QUOTA_MAX_CPUS": "3", "VMHOST_QUOTA_MAX_MEMORY_MB": "4096",
         "VMHOST_QUOTA_MAX_TTL_SECONDS": "7200", "VMHOST_QUOTA_DEFAULT_CPUS": "1",
         "VMHOST_QUOTA_DEFAULT_MEMORY_MB": "1024"}


def test_a_user_over_the_workspace_quota_gets_403_naming_limit_and_use(make_daemon, name: str) -> None:
    process = make_daemon(SMALL)
    with process.tcp(process.token("alice")) as alice:
        first = create_ws(alice, f"{name}-1", wait=False)
        create_ws(alice, f"{name}-2", wait=False)
        refused = alice.post("/api/v1/workspaces", json={"name": f"{name}-3"})
        assert refused.status_code == 403
        assert refused.json() == {"detail": "quota exceeded: alice has 2 of 2 workspaces", "code": "quota_exceeded"}
        assert len(alice.get("/api/v1/workspaces").json()["items"]) == 2
        # deleting one makes room again
        wait_op(alice, first["operation"]["id"])
        wait_op(alice, alice.delete(f"/api/v1/workspaces/{name}-1").json()["id"])
        create_ws(alice, f"{name}-3", wait=False)
    # another user has a quota of their own
    with process.tcp(process.token("bob")) as bob:
        create_ws(bob, f"{name}-1", wait=False)


def test_cpus_and_memory_count_template_or_configured_defaults(make_daemon, name: str) -> None:
    process = make_daemon({**SMALL, "VMHOST_QUOTA_MAX_WORKSPACES": "10"})
    with process.tcp(process.token("alice")) as alice:
        create_ws(alice, f"{name}-a", wait=False)  # neither it nor base sets cpus: counts as 1 CPU, 1024 MB
        create_ws(alice, f"{name}-b", wait=False, cpus=1.5, memory_mb=2048)
        too_many_cpus = alice.post("/api/v1/workspaces", json={"name": f"{name}-c", "cpus": 1})
        assert too_many_cpus.status_code == 403
        assert too_many_cpus.json()["detail"] == ("quota exceeded: alice uses 2.5 of 3 CPUs and this workspace "
                                                  "asks for 1 more")
        too_much_memory = alice.post("/api/v1/workspaces", json={"name": f"{name}-c", "cpus": 0.5,
                                                                  "memory_mb": 1025})
        assert too_much_memory.status_code == 403
        assert "uses 3072 of 4096 MB of memory" in too_much_memory.json()["detail"]
        create_ws(alice, f"{name}-c", wait=False, cpus=0.5, memory_mb=1024)  # exactly up to the limits
        usage = alice.get("/api/v1/me").json()["quota"]["usage"]
        assert usage == {"workspaces": 3, "cpus": 3.0, "memory_mb": 4096, "snapshot_bytes": 0}


def test_ttl_is_capped_and_defaults_to_the_longest_allowed(make_daemon, name: str) -> None:
    process = make_daemon(SMALL)
    with process.tcp(process.token("alice")) as alice:
        refused = alice.post("/api/v1/workspaces", json={"name": name, "ttl_seconds": 7201})
        assert refused.status_code == 403
        assert "at most 7200 s" in refused.json()["detail"]
        workspace = create_ws(alice, name, wait=False)["workspace"]
        assert workspace["ttl_seconds"] == 7200
        lifetime = datetime.fromisoformat(workspace["expires_at"]) - datetime.fromisoformat(workspace["created_at"])
        assert lifetime.total_seconds() == 7200


def test_admins_have_no_quota(make_daemon, name: str) -> None:
    process = make_daemon({**SMALL, "VMHOST_QUOTA_MAX_WORKSPACES": "1"})
    with process.client() as root:
        for n in range(2):
            create_ws(root, f"{name}-{n}", wait=False)
        me = root.get("/api/v1/me").json()
        assert me["role"] == "admin" and me["quota"]["exempt"] is True


def test_twenty_parallel_creates_never_end_above_the_limit(make_daemon, name: str) -> None:
    process = make_daemon({"VMHOST_QUOTA_MAX_WORKSPACES": "3"})
    secret = process.token("racer")

    def create(n: int) -> int:
        with process.tcp(secret) as client:
            return client.post("/api/v1/workspaces", json={"name": f"{name}-{n}"}).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(create, range(20)))
    assert sorted(statuses) == [202] * 3 + [403] * 17
    with process.tcp(secret) as client:
        assert len(client.get("/api/v1/workspaces").json()["items"]) == 3
        assert client.get("/api/v1/me").json()["quota"]["usage"]["workspaces"] == 3


def test_admins_set_per_user_quotas_users_only_read_their_own(make_daemon, name: str) -> None:
    process = make_daemon(SMALL)
    with process.client() as root, process.tcp(process.token("alice")) as alice:
        assert alice.put("/api/v1/quotas/alice", json={"max_workspaces": 50}).status_code == 403
        assert alice.get("/api/v1/quotas/bob").status_code == 403
        own = alice.get("/api/v1/quotas/alice").json()
        assert own["limits"]["max_workspaces"] == 2 and own["overrides"]["max_workspaces"] is None

        changed = root.put("/api/v1/quotas/alice", json={"max_workspaces": 3, "max_cpus": 10})
        assert changed.status_code == 200, changed.text
        assert changed.json()["limits"]["max_workspaces"] == 3
        assert changed.json()["limits"]["max_memory_mb"] == 4096  # not overridden: the default
        for n in range(3):
            create_ws(alice, f"{name}-{n}", wait=False)
        assert "has 3 of 3 workspaces" in alice.post("/api/v1/workspaces", json={"name": f"{name}-x"}).json()["detail"]

        assert root.put("/api/v1/quotas/alice", json={"max_workspaces": -1}).status_code == 422
        assert root.put("/api/v1/quotas/alice", json={"max_things": 1}).status_code == 422
        assert root.put("/api/v1/quotas/bad%20user", json={}).status_code == 422
        reset = root.put("/api/v1/quotas/alice", json={}).json()
        assert reset["limits"]["max_workspaces"] == 2 and reset["usage"]["workspaces"] == 3


def test_me_says_who_the_caller_is(daemon: Daemon, api: httpx.Client) -> None:
    reader = daemon.token("gina", scope="read")
    with daemon.tcp(reader) as tcp:
        me = tcp.get("/api/v1/me").json()
    assert (me["user"], me["role"], me["door"], me["scope"], me["address"]) == ("gina", "user", "token", "read",
                                                                                "127.0.0.1")
    assert me["token_id"].startswith("tok_")
    assert me["quota"]["exempt"] is False and me["quota"]["usage"]["workspaces"] == 0
    root = api.get("/api/v1/me").json()
    assert (root["user"], root["role"], root["door"]) == ("root", "admin", "socket")


def test_cli_whoami_and_quotas(make_daemon) -> None:
    process = make_daemon(SMALL)
    whoami = process.cli("whoami")
    assert whoami.returncode == 0, whoami.stderr
    assert "admin" in whoami.stdout and "socket" in whoami.stdout and "none (admin)" in whoami.stdout
    changed = process.cli("quotas", "set", "alice", "--max-workspaces", "4", "--max-ttl", "1d")
    assert changed.returncode == 0, changed.stderr
    assert "0 of 4 (set for this user)" in changed.stdout and "86400 s" in changed.stdout
    kept = process.cli("quotas", "set", "alice", "--max-cpus", "6", "--json")
    assert '"max_workspaces": 4' in kept.stdout and '"max_cpus": 6.0' in kept.stdout
    shown = process.cli("quotas", "show", "alice")
    assert "0 of 6 (set for this user)" in shown.stdout
    as_alice = process.cli("--url", process.url, "--token", process.token("alice"), "quotas", "set", "alice",
                           "--max-workspaces", "9")
    assert as_alice.returncode == 5 and "only admins set quotas" in as_alice.stderr


def test_snapshot_quota_check_for_the_snapshot_feature(tmp_path) -> None:
    store = Store(tmp_path / "q.db")
    quotas = Quotas.from_settings(store, Settings.defaults(quota_max_snapshots=2))
    now = utcnow()
    workspace = Workspace(id="ws_1", name="web", owner="alice", template="base", image="x",
                          status=WorkspaceStatus.RUNNING, created_at=now, updated_at=now)
    alice = Caller(user="alice")
    quotas.check_snapshot(alice, workspace, existing=1)
    try:
        quotas.check_snapshot(alice, workspace, existing=2)
    except QuotaExceeded as exc:
        assert exc.detail == "quota exceeded: alice has 2 of 2 snapshots of workspace web"
    else:
        raise AssertionError("a third snapshot was allowed")
    quotas.check_snapshot(Caller(user="root", admin=True), workspace, existing=50)
    quotas.set(Caller(user="root", admin=True), "alice", {"max_snapshots": 3})
    with store.transaction() as conn:
        quotas.check_snapshot(alice, workspace, existing=2, conn=conn)
    store.close()


def test_editing_or_extending_cannot_outlive_the_longest_ttl(make_daemon, name: str) -> None:
    process = make_daemon(SMALL)
    with process.tcp(process.token("alice")) as alice:
        create_ws(alice, name, wait=False, ttl_seconds=3600)
        longer = alice.patch(f"/api/v1/workspaces/{name}", json={"ttl_seconds": 7201})
        assert longer.status_code == 403 and "at most 7200 s" in longer.json()["detail"]
        forever = alice.patch(f"/api/v1/workspaces/{name}", json={"ttl_seconds": None})
        assert forever.status_code == 200 and forever.json()["ttl_seconds"] == 7200
        extended = alice.post(f"/api/v1/workspaces/{name}/extend", json={"seconds": 3600})
        assert extended.status_code == 403 and "quota exceeded" in extended.json()["detail"]
    with process.client() as root:  # admins are not held to it
        assert root.post(f"/api/v1/workspaces/{name}/extend", json={"seconds": 3600}).status_code == 200
