"""The whole workspace lifecycle over the REST API, checked against what Docker really holds: on one
engine and on a three-node Swarm (`on_engine`)."""

from __future__ import annotations

import subprocess

import httpx
from conftest import OnEngine, all_items, create_ws, wait_op


def test_create_answers_202_pending_with_location_then_runs_with_labels_init_and_volume(
        on_engine: OnEngine, engine_api: httpx.Client, name: str) -> None:
    response = engine_api.post("/api/v1/workspaces", json={"name": name, "template": "web", "labels": {"team": "infra"},
                                                   "cpus": 0.5, "memory_mb": 64, "ttl_seconds": 3600,
                                                   "plugins": ["git", "git"], "env": {"EXTRA": "1"}})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["workspace"]["status"] == "pending"
    assert body["operation"]["type"] == "create"
    assert response.headers["location"] == f"/api/v1/operations/{body['operation']['id']}"

    operation = wait_op(engine_api, body["operation"]["id"])
    assert operation["status"] == "succeeded", operation
    assert "hello from provisioning" in operation["output"]

    workspace = engine_api.get(f"/api/v1/workspaces/{name}").json()
    assert workspace["status"] == "running"
    assert workspace["plugins"] == ["git"]
    assert workspace["expires_at"] is not None
    if on_engine.kind == "docker":  # a Swarm service publishes nothing: its ports are reached through vmhost
        assert workspace["connection"]["ports"]["8080/tcp"].startswith("127.0.0.1:")

    container = on_engine.container(workspace)
    labels = container.labels
    assert labels["vmhost.managed"] == "true"
    assert labels["vmhost.workspace"] == workspace["id"]
    assert labels["vmhost.owner"] == workspace["owner"]
    assert container.status == "running"
    host_config = container.attrs["HostConfig"]
    assert host_config["Init"] is True
    assert host_config["NanoCpus"] == 500_000_000
    assert host_config["Memory"] == 64 * 1024 * 1024
    assert not host_config["Privileged"]
    mounts = {m["Destination"]: m for m in container.attrs["Mounts"]}
    assert mounts["/workspace"]["Type"] == "volume"
    [volume] = on_engine.volumes(workspace)
    assert mounts["/workspace"]["Name"] == volume.name
    assert volume.attrs["Labels"]["vmhost.workspace"] == workspace["id"]
    assert container.exec_run(["cat", "/workspace/.provisioned"]).output == b"provisioned\n"
    assert container.exec_run(["sh", "-c", "echo $GREETING $EXTRA"]).output == b"hi 1\n"


def test_stop_start_restart_and_delete_follow_docker(on_engine: OnEngine, engine_api: httpx.Client, name: str) -> None:
    workspace = create_ws(engine_api, name)["workspace"]
    engine_api.put(f"/api/v1/workspaces/{name}/files", params={"path": "/workspace/kept"}, content=b"kept\n")

    response = engine_api.post(f"/api/v1/workspaces/{name}/actions/stop")
    assert response.status_code == 202
    assert response.headers["location"].endswith(response.json()["id"])
    assert wait_op(engine_api, response.json()["id"])["status"] == "succeeded"
    assert engine_api.get(f"/api/v1/workspaces/{name}").json()["status"] == "stopped"
    assert not on_engine.running(workspace)

    # the short form
    operation = engine_api.post(f"/api/v1/workspaces/{workspace['id']}/start").json()
    assert wait_op(engine_api, operation["id"])["status"] == "succeeded"
    assert engine_api.get(f"/api/v1/workspaces/{name}").json()["status"] == "running"
    assert on_engine.sh(workspace, "cat /workspace/kept") == "kept\n"

    started_at = on_engine.container(workspace).attrs["State"]["StartedAt"]
    operation = engine_api.post(f"/api/v1/workspaces/{name}/restart").json()
    assert wait_op(engine_api, operation["id"])["status"] == "succeeded"
    assert on_engine.container(workspace).attrs["State"]["StartedAt"] != started_at

    response = engine_api.delete(f"/api/v1/workspaces/{name}")
    assert response.status_code == 202
    assert wait_op(engine_api, response.json()["id"])["status"] == "succeeded"
    assert engine_api.get(f"/api/v1/workspaces/{name}").status_code == 404
    assert on_engine.containers(workspace) == [] and on_engine.volumes(workspace) == []

    # the history outlives the workspace
    history = engine_api.get("/api/v1/operations", params={"workspace_id": workspace["id"]}).json()["items"]
    assert [o["type"] for o in history] == ["delete", "restart", "start", "stop", "create"]


def test_second_action_while_one_is_in_flight_is_409_naming_it(api: httpx.Client, name: str) -> None:
    accepted = create_ws(api, name, wait=False)
    response = api.post(f"/api/v1/workspaces/{name}/actions/stop")
    assert response.status_code == 409
    assert accepted["operation"]["id"] in response.json()["detail"]
    assert response.json()["code"] == "operation_in_flight"
    wait_op(api, accepted["operation"]["id"])


def test_list_filters_by_status_and_label(api: httpx.Client, name: str) -> None:
    create_ws(api, f"{name}-a", labels={"tier": "one"})
    second = create_ws(api, f"{name}-b", labels={"tier": "two"})["workspace"]
    wait_op(api, api.post(f"/api/v1/workspaces/{second['id']}/stop").json()["id"])

    names = {w["name"] for w in api.get("/api/v1/workspaces", params={"label": "tier=one"}).json()["items"]}
    assert names == {f"{name}-a"}
    stopped = {w["name"] for w in all_items(api, "/api/v1/workspaces", status="stopped")}
    assert f"{name}-b" in stopped and f"{name}-a" not in stopped
    assert api.get("/api/v1/workspaces", params={"status": "sleeping"}).status_code == 422
    assert api.get("/api/v1/workspaces", params={"label": "nokey"}).status_code == 422


def test_operations_filter_by_type_and_status(api: httpx.Client, name: str) -> None:
    workspace = create_ws(api, name)["workspace"]
    creates = api.get("/api/v1/operations", params={"workspace_id": name, "type": "create"}).json()["items"]
    assert [o["workspace_id"] for o in creates] == [workspace["id"]]
    succeeded = api.get("/api/v1/operations", params={"status": "succeeded", "type": "create"}).json()["items"]
    assert workspace["id"] in {o["workspace_id"] for o in succeeded}
    assert api.get("/api/v1/operations", params={"status": "bogus"}).status_code == 422


def test_wait_times_out_and_returns_the_operation_still_in_flight(api: httpx.Client, name: str) -> None:
    accepted = create_ws(api, name, wait=False, provision=["sleep 2"])
    early = api.get(f"/api/v1/operations/{accepted['operation']['id']}/wait", params={"timeout": 0.2}).json()
    assert early["status"] in ("pending", "running")
    assert wait_op(api, accepted["operation"]["id"])["status"] == "succeeded"


def test_clone_repository_at_branch_into_workspace(on_engine: OnEngine, engine_api: httpx.Client, name: str,
                                                   tmp_path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README.md").write_text("main branch\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    subprocess.run([*git, "checkout", "-qb", "feature"], check=True)
    (repo / "feature.txt").write_text("on feature\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "two"], check=True)

    workspace = create_ws(engine_api, name, repo_url=f"file://{repo}", branch="feature")["workspace"]
    assert on_engine.sh(workspace, "cat /workspace/feature.txt /workspace/README.md") == "on feature\nmain branch\n"

    bad = create_ws(engine_api, f"{name}-x", wait=False, repo_url=f"file://{repo}", branch="nope")
    failed = wait_op(engine_api, bad["operation"]["id"])
    assert failed["status"] == "failed"
    assert "cannot clone" in failed["error"] and "nope" in failed["error"]
    broken = engine_api.get(f"/api/v1/workspaces/{name}-x").json()
    assert broken["status"] == "error"
    assert "cannot clone" in broken["status_reason"]
    wait_op(engine_api, engine_api.delete(f"/api/v1/workspaces/{name}-x").json()["id"])


def test_failing_provision_command_leaves_error_with_a_reason(engine_api: httpx.Client, name: str) -> None:
    accepted = create_ws(engine_api, name, wait=False, provision=["echo about to fail", "exit 3"])
    operation = wait_op(engine_api, accepted["operation"]["id"])
    assert operation["status"] == "failed"
    assert "provision command 2" in operation["error"] and "exited with 3" in operation["error"]
    assert "about to fail" in operation["output"]
    workspace = engine_api.get(f"/api/v1/workspaces/{name}").json()
    assert workspace["status"] == "error"
    assert "exited with 3" in workspace["status_reason"]
    # a workspace in error can still be deleted
    assert wait_op(engine_api, engine_api.delete(f"/api/v1/workspaces/{name}").json()["id"])["status"] == "succeeded"
