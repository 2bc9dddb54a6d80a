"""A warm pool on a real daemon and Docker: the daemon fills it, a user's create claims a ready workspace
(it runs with the owner's name, the template's provisioning already done and the request's own on top,
its container labelled with its id, then moves from the pool's isolated network to the owner's), the
pool comes back to its size; pools are for admins. (tests/unit/test_pools.py covers the claim under
races and crashes.)"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import docker
import httpx
from conftest import wait_op

SIZE = 2


def pool(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/api/v1/pools")
    response.raise_for_status()
    return next(p for p in response.json()["items"] if p["template"] == "warm")


def wait_ready(client: httpx.Client, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (found := pool(client))["ready"] != SIZE:
        assert time.monotonic() < deadline, f"the pool is not back to {SIZE} after {timeout} s: {found}"
        time.sleep(0.25)
    return found


def output_of(client: httpx.Client, workspace_id: str, *argv: str) -> str:
    response = client.post(f"/api/v1/workspaces/{workspace_id}/commands", json={"argv": list(argv), "stream": True})
    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[-1]["exit_code"] == 0, lines
    return "".join(line.get("data", "") for line in lines[:-1] if line.get("stream") == "stdout")


def test_a_create_claims_from_the_warm_pool_and_the_pool_refills(
        make_daemon: Any, test_image: str, tmp_path: Path, docker_client: docker.DockerClient, name: str) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "warm.toml").write_text(f'image = "{test_image}"\nshell = "/bin/sh"\npool_size = {SIZE}\n'
                                         'provision = ["echo pooled > /workspace/.from-pool"]\n')
    daemon = make_daemon({"VMHOST_TEMPLATES_DIR": str(templates)})
    alice_token = daemon.token("alice")
    with daemon.client() as admin, daemon.tcp(alice_token) as alice:
        assert wait_ready(admin) == {"template": "warm", "size": SIZE, "ready": SIZE, "filling": 0, "failed": 0}
        assert alice.get("/api/v1/pools").status_code == 403
        assert admin.get("/api/v1/workspaces").json()["items"] == []  # the pool's are no one's

        response = alice.post("/api/v1/workspaces", json={"name": name, "template": "warm",
                                                          "provision": ["echo mine > /workspace/.mine"]})
        assert response.status_code == 202, response.text
        operation = wait_op(alice, response.json()["operation"]["id"])
        assert (operation["status"], operation["result"].get("pooled")) == ("succeeded", True), operation
        workspace = alice.get(f"/api/v1/workspaces/{name}").json()
        assert (workspace["status"], workspace["owner"], workspace["name"]) == ("running", "alice", name)
        assert output_of(alice, workspace["id"], "cat", "/workspace/.from-pool", "/workspace/.mine") == \
            "pooled\nmine\n"
        assert [w["name"] for w in alice.get("/api/v1/workspaces").json()["items"]] == [name]

        container = docker_client.containers.get(workspace["connection"]["container_id"])
        assert container.labels["vmhost.workspace"] == workspace["id"]
        join = alice.get("/api/v1/operations", params={"workspace": workspace["id"], "type": "join_network"}).json()
        assert wait_op(alice, join["items"][0]["id"])["status"] == "succeeded"
        container.reload()
        assert list(container.attrs["NetworkSettings"]["Networks"]) == [f"vmhost-{daemon.instance}-alice"]
        pool_network = docker_client.networks.list(filters={"label": [f"vmhost.instance={daemon.instance}",
                                                                      "vmhost.owner=:pool"]})[0]
        assert pool_network.attrs["Options"]["com.docker.network.bridge.enable_icc"] == "false"

        assert wait_ready(admin)["ready"] == SIZE  # refilled
        metrics = admin.get("/metrics").text
        assert f'vmhost_pool_size{{template="warm"}} {SIZE}.0' in metrics
        assert 'vmhost_pool_ready{template="warm"}' in metrics
        wait_op(alice, alice.delete(f"/api/v1/workspaces/{workspace['id']}").json()["id"])


def test_a_daemon_killed_during_a_claim_loses_nothing_and_claims_nothing_twice(
        make_daemon: Any, test_image: str, tmp_path: Path, name: str) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "warm.toml").write_text(f'image = "{test_image}"\nshell = "/bin/sh"\npool_size = {SIZE}\n')
    daemon = make_daemon({"VMHOST_TEMPLATES_DIR": str(templates)})
    alice_token = daemon.token("alice")
    with daemon.client() as admin, daemon.tcp(alice_token) as alice:
        wait_ready(admin)
        response = alice.post("/api/v1/workspaces", json={"name": name, "template": "warm",
                                                          "provision": ["sleep 2", "echo mine > /workspace/.mine"]})
        assert response.status_code == 202, response.text
        operation_id = response.json()["operation"]["id"]
        deadline = time.monotonic() + 30
        while alice.get(f"/api/v1/operations/{operation_id}").json()["status"] != "running":  # its own steps
            assert time.monotonic() < deadline
            time.sleep(0.05)
    daemon.kill()
    daemon.start()

    with daemon.client() as admin, daemon.tcp(alice_token) as alice:
        operation = wait_op(alice, operation_id)
        assert (operation["status"], operation["attempts"], operation["result"].get("pooled")) == ("succeeded", 2, True)
        workspace = alice.get(f"/api/v1/workspaces/{name}").json()
        assert workspace["status"] == "running"
        assert output_of(alice, workspace["id"], "cat", "/workspace/.mine") == "mine\n"
        wait_ready(admin)
    with sqlite3.connect(daemon.db_path) as db:
        pooled = {row[0] for row in db.execute("SELECT id FROM workspaces WHERE pool IS NOT NULL")}
        owned = [row[0] for row in db.execute("SELECT id FROM workspaces WHERE owner = 'alice'")]
    assert owned == [workspace["id"]] and workspace["id"] not in pooled and len(pooled) == SIZE
