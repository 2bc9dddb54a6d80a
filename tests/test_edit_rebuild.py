"""Editing a workspace's metadata, extending its expiry, and rebuilding its container."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import httpx
from conftest import Daemon, all_items, create_ws, wait_op


def expiry(workspace: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(workspace["expires_at"])


def test_patch_renames_sets_expiry_labels_and_plugins(api: httpx.Client, name: str) -> None:
    workspace = create_ws(api, name, labels={"keep": "1", "old": "2"})["workspace"]
    assert workspace["expires_at"] is None
    before = datetime.now(UTC)
    response = api.patch(f"/api/v1/workspaces/{name}", json={
        "name": f"{name}-new", "ttl_seconds": 3600, "labels": {"team": "infra", "keep": "one"},
        "remove_labels": ["old", "absent"], "plugins": ["git", "git", "docker"]})
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["id"] == workspace["id"] and edited["name"] == f"{name}-new"
    assert edited["labels"] == {"keep": "one", "team": "infra"}
    assert edited["plugins"] == ["git", "docker"]
    assert edited["ttl_seconds"] == 3600
    assert before + timedelta(seconds=3600) <= expiry(edited) <= datetime.now(UTC) + timedelta(seconds=3600)
    assert edited["status"] == "running"

    assert api.get(f"/api/v1/workspaces/{name}").status_code == 404
    listed = all_items(api, "/api/v1/workspaces", label="team=infra")
    assert workspace["id"] in {w["id"] for w in listed}

    cleared = api.patch(f"/api/v1/workspaces/{name}-new", json={"ttl_seconds": None}).json()
    assert cleared["expires_at"] is None and cleared["ttl_seconds"] is None
    assert cleared["labels"] == edited["labels"]  # fields not given stay as they were
    assert api.patch(f"/api/v1/workspaces/{name}-new", json={}).json()["name"] == f"{name}-new"


def test_bad_edits_are_4xx_with_a_reason(api: httpx.Client, name: str) -> None:
    create_ws(api, name)
    create_ws(api, f"{name}-b")
    url = f"/api/v1/workspaces/{name}"
    taken = api.patch(url, json={"name": f"{name}-b"})
    assert taken.status_code == 409 and taken.json()["code"] == "name_taken"
    assert f"{name}-b" in taken.json()["detail"]
    for body, words in (({"name": "Bad_Name"}, "name"), ({"name": None}, "invalid name"),
                        ({"ttl_seconds": 0}, "ttl_seconds"), ({"ttl_seconds": "soon"}, "ttl_seconds"),
                        ({"labels": {"bad key": "x"}}, "label key"),
                        ({"labels": {"a": "1"}, "remove_labels": ["a"]}, "both set and removed"),
                        ({"plugins": ["$$"]}, "plugin"), ({"plugins": None}, "plugins"),
                        ({"owner": "mallory"}, "owner"), ({"status": "running"}, "status")):
        response = api.patch(url, json=body)
        assert response.status_code == 422, (body, response.text)
        assert words in response.json()["detail"], (body, response.json())
    assert api.patch("/api/v1/workspaces/nope-none", json={"name": "x"}).status_code == 404
    assert api.get(url).json()["name"] == name


def test_extend_pushes_the_expiry_out_and_never_in(api: httpx.Client, name: str) -> None:
    workspace = create_ws(api, name, ttl_seconds=600)["workspace"]
    response = api.post(f"/api/v1/workspaces/{name}/extend", json={"seconds": 7200})
    assert response.status_code == 200, response.text
    assert expiry(response.json()) == expiry(workspace) + timedelta(seconds=7200)

    for body in ({"seconds": 0}, {"seconds": -60}, {"seconds": "2h"}, {}, {"seconds": 400 * 86400}):
        bad = api.post(f"/api/v1/workspaces/{name}/extend", json=body)
        assert bad.status_code == 422, (body, bad.text)
    near_limit = api.post(f"/api/v1/workspaces/{name}/extend", json={"seconds": 365 * 86400})
    assert near_limit.status_code == 422 and "365 days" in near_limit.json()["detail"]

    forever = create_ws(api, f"{name}-f")["workspace"]
    unchanged = api.post(f"/api/v1/workspaces/{forever['id']}/extend", json={"seconds": 60})
    assert unchanged.status_code == 200 and unchanged.json()["expires_at"] is None


def test_cli_edit_and_extend(api: httpx.Client, daemon: Daemon, name: str) -> None:
    create_ws(api, name, labels={"gone": "1"})
    done = daemon.cli("ws", "edit", name, "--name", f"{name}-c", "--label", "k=v", "--unlabel", "gone",
                      "--ttl", "2h", "--json")
    assert done.returncode == 0, done.stderr
    edited = api.get(f"/api/v1/workspaces/{name}-c").json()
    assert edited["labels"] == {"k": "v"} and edited["ttl_seconds"] == 7200

    done = daemon.cli("ws", "extend", f"{name}-c", "1h")
    assert done.returncode == 0, done.stderr
    assert "now expires in" in done.stdout
    assert expiry(api.get(f"/api/v1/workspaces/{name}-c").json()) == expiry(edited) + timedelta(hours=1)

    done = daemon.cli("ws", "edit", f"{name}-c", "--ttl", "none")
    assert done.returncode == 0 and "never" in done.stdout
    done = daemon.cli("ws", "extend", f"{name}-c", "1h")
    assert done.returncode == 0 and "has no expiry" in done.stdout

    done = daemon.cli("ws", "edit", f"{name}-c")
    assert done.returncode == 2 and "nothing to change" in done.stderr
    done = daemon.cli("ws", "edit", f"{name}-c", "--label", "novalue")
    assert done.returncode == 2 and "key=value" in done.stderr
    done = daemon.cli("ws", "edit", f"{name}-c", "--name", "UPPER")
    assert done.returncode == 2 and "invalid" in done.stderr


def test_rebuild_takes_the_templates_current_image_and_keeps_only_workspace(
        make_daemon: Any, docker_client: docker.DockerClient, test_image: str, tmp_path: Path, name: str) -> None:
    template = tmp_path / "rebuilt.toml"
    template.write_text(f'image = "{test_image}"\nprovision = ["echo provisioned >> /workspace/runs"]\n'
                        'env = {KEPT = "yes"}\n')
    daemon = make_daemon({"VMHOST_TEMPLATES_DIR": str(tmp_path)})
    newer = f"vmhost-test-rebuilt:{uuid.uuid4().hex[:8]}"
    docker_client.images.get(test_image).tag(newer)  # the same layers under a new name, removed below
    try:
        with daemon.client() as api:
            workspace = create_ws(api, name, template="rebuilt", env={"MINE": "1"}, memory_mb=64)["workspace"]
            old = docker_client.containers.get(workspace["connection"]["container_id"])
            old.exec_run(["sh", "-c", "echo in > /workspace/inside; echo out > /root/outside"])
            template.write_text(template.read_text().replace(test_image, newer))

            response = api.post(f"/api/v1/workspaces/{name}/actions/rebuild")
            assert response.status_code == 202, response.text
            assert response.json()["type"] == "rebuild"
            assert response.headers["location"] == f"/api/v1/operations/{response.json()['id']}"
            operation = wait_op(api, response.json()["id"])
            assert operation["status"] == "succeeded", operation
            assert "$ echo provisioned" in operation["output"]

            rebuilt = api.get(f"/api/v1/workspaces/{name}").json()
            assert rebuilt["status"] == "running" and rebuilt["image"] == newer
            assert rebuilt["connection"]["container_id"] != old.id
            container = docker_client.containers.get(rebuilt["connection"]["container_id"])
            assert container.attrs["Config"]["Image"] == newer
            assert container.attrs["HostConfig"]["Memory"] == 64 * 1024 * 1024
            assert container.labels["vmhost.workspace"] == workspace["id"]
            assert container.exec_run(["cat", "/workspace/inside"]).output == b"in\n"
            assert container.exec_run(["cat", "/root/outside"]).exit_code != 0
            assert container.exec_run(["cat", "/workspace/runs"]).output == b"provisioned\nprovisioned\n"
            assert container.exec_run(["sh", "-c", "echo $KEPT $MINE"]).output == b"yes 1\n"
            assert not docker_client.containers.list(all=True, filters={"id": old.id})

            done = daemon.cli("ws", "rebuild", name)
            assert done.returncode == 0, done.stderr
            assert "rebuild" in done.stdout and "succeeded" in done.stdout
            assert api.get(f"/api/v1/workspaces/{name}").json()["status"] == "running"
    finally:
        docker_client.images.remove(newer)


def test_rebuild_while_busy_is_409_and_unknown_action_422(api: httpx.Client, name: str) -> None:
    accepted = create_ws(api, name, wait=False, provision=["sleep 2"])
    busy = api.post(f"/api/v1/workspaces/{name}/actions/rebuild")
    assert busy.status_code == 409 and busy.json()["code"] == "operation_in_flight"
    assert api.post(f"/api/v1/workspaces/{name}/actions/rebiuld").status_code == 422
    wait_op(api, accepted["operation"]["id"])


def test_the_spec_documents_edit_extend_commands_and_cancel(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert {"patch", "delete", "get"} <= set(paths["/api/v1/workspaces/{ref}"])
    assert "force" in {p["name"] for p in paths["/api/v1/workspaces/{ref}"]["delete"]["parameters"]}
    assert "post" in paths["/api/v1/workspaces/{ref}/extend"]
    commands = paths["/api/v1/workspaces/{ref}/commands"]["post"]
    assert {"200", "202", "409", "422"} <= set(commands["responses"])
    assert "application/x-ndjson" in commands["responses"]["200"]["content"]
    assert "delete" in paths["/api/v1/operations/{operation_id}"]
