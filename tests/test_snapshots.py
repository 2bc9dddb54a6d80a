"""Snapshots: a workspace's filesystem and /workspace, taken, restored in place or as a new workspace,
and purged with the workspace, checked against what Docker and the disk really hold."""

from __future__ import annotations

import json
import stat

import docker
import httpx
from conftest import Daemon, create_ws, wait_op


def sh(docker_client: docker.DockerClient, api: httpx.Client, name: str, script: str) -> str:
    """Run a shell line in the workspace's current container."""
    container_id = api.get(f"/api/v1/workspaces/{name}").json()["connection"]["container_id"]
    result = docker_client.containers.get(container_id).exec_run(["sh", "-c", script])
    assert result.exit_code == 0, result.output
    return result.output.decode()


def snapshot(client: httpx.Client, workspace: str, snapshot_name: str) -> dict:
    response = client.post(f"/api/v1/workspaces/{workspace}/snapshots", json={"name": snapshot_name})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == f"/api/v1/operations/{accepted['operation']['id']}"
    assert accepted["snapshot"]["status"] == "creating" and accepted["operation"]["type"] == "snapshot"
    assert wait_op(client, accepted["operation"]["id"])["status"] == "succeeded"
    return client.get(f"/api/v1/workspaces/{workspace}/snapshots/{snapshot_name}").json()


def snapshot_images(docker_client: docker.DockerClient, **labels: str) -> list:
    return docker_client.images.list(filters={"label": [f"{k.replace('_', '.')}={v}" for k, v in labels.items()]})


def test_restore_in_place_brings_back_the_filesystem_and_workspace_then_delete_purges_everything(
        api: httpx.Client, daemon: Daemon, docker_client: docker.DockerClient, name: str) -> None:
    workspace = create_ws(api, name)["workspace"]
    sh(docker_client, api, name, "echo kept > /workspace/kept.txt && echo fs > /etc/marker")

    taken = snapshot(api, name, "before")
    assert taken["status"] == "ready"
    assert taken["volume_bytes"] > 0 and taken["size_bytes"] == taken["image_bytes"] + taken["volume_bytes"]
    images = snapshot_images(docker_client, vmhost_snapshot=taken["id"])
    assert len(images) == 1
    assert images[0].labels["vmhost.workspace"] == workspace["id"]
    assert images[0].labels["vmhost.instance"] == daemon.instance
    archives = list((daemon.dir / "snapshots" / workspace["id"]).glob("*.tar"))
    assert [a.stat().st_size for a in archives] == [taken["volume_bytes"]]
    assert [stat.S_IMODE(p.stat().st_mode) for p in (daemon.dir / "snapshots", archives[0].parent, archives[0])] \
        == [0o700, 0o700, 0o600]  # whatever the umask: the volume's files are the owner's

    # names are unique per workspace, and follow the rules of workspace names
    duplicate = api.post(f"/api/v1/workspaces/{name}/snapshots", json={"name": "before"})
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "name_taken"
    assert api.post(f"/api/v1/workspaces/{name}/snapshots", json={"name": "Bad_Name"}).status_code == 422
    assert api.get(f"/api/v1/workspaces/{name}/snapshots/nope").json()["code"] == "snapshot_not_found"

    sh(docker_client, api, name, "rm /workspace/kept.txt /etc/marker && echo new > /workspace/added.txt "
                                 "&& echo later > /etc/later")
    response = api.post(f"/api/v1/workspaces/{name}/snapshots/before/restore")
    assert response.status_code == 202
    assert response.headers["location"].endswith(response.json()["operation"]["id"])
    assert wait_op(api, response.json()["operation"]["id"])["status"] == "succeeded"

    restored = api.get(f"/api/v1/workspaces/{name}").json()
    assert restored["status"] == "running"
    assert sh(docker_client, api, name, "cat /workspace/kept.txt /etc/marker") == "kept\nfs\n"
    assert "added.txt" not in sh(docker_client, api, name, "ls /workspace")
    assert "later" not in sh(docker_client, api, name, "ls /etc")
    assert [s["name"] for s in api.get(f"/api/v1/workspaces/{name}/snapshots").json()["items"]] == ["before"]

    wait_op(api, api.delete(f"/api/v1/workspaces/{name}").json()["id"])
    assert not snapshot_images(docker_client, vmhost_workspace=workspace["id"])
    assert not (daemon.dir / "snapshots" / workspace["id"]).exists()


def test_restore_of_a_stopped_workspace_leaves_it_stopped(api: httpx.Client, docker_client: docker.DockerClient,
                                                         name: str) -> None:
    create_ws(api, name)
    sh(docker_client, api, name, "echo one > /workspace/file")
    snapshot(api, name, "one")
    sh(docker_client, api, name, "echo two > /workspace/file")
    wait_op(api, api.post(f"/api/v1/workspaces/{name}/stop").json()["id"])

    operation = api.post(f"/api/v1/workspaces/{name}/snapshots/one/restore", json={}).json()["operation"]
    assert wait_op(api, operation["id"])["status"] == "succeeded"
    workspace = api.get(f"/api/v1/workspaces/{name}").json()
    assert workspace["status"] == "stopped"
    stream, _ = docker_client.api.get_archive(workspace["connection"]["container_id"], "/workspace/file")
    assert b"one\n" in b"".join(stream)


def test_restore_as_new_belongs_to_the_caller_and_outlives_the_original(
        daemon: Daemon, api: httpx.Client, docker_client: docker.DockerClient, name: str) -> None:
    alice = daemon.token("alice")
    with daemon.tcp(alice) as as_alice:
        original = create_ws(as_alice, name, labels={"team": "a"}, env={"COLOR": "blue"})["workspace"]
        sh(docker_client, as_alice, name, "echo data > /workspace/data.txt && echo conf > /etc/app.conf")
        taken = snapshot(as_alice, name, "base")
        # another workspace may use the same snapshot name
        create_ws(as_alice, f"{name}-b")
        snapshot(as_alice, f"{name}-b", "base")

        response = as_alice.post(f"/api/v1/workspaces/{name}/snapshots/base/restore", json={"as_new": f"{name}-copy"})
        assert response.status_code == 202, response.text
        copy = response.json()["workspace"]
        assert copy["owner"] == "alice" and copy["name"] == f"{name}-copy" and copy["id"] != original["id"]
        assert wait_op(as_alice, response.json()["operation"]["id"])["status"] == "succeeded"
        copy = as_alice.get(f"/api/v1/workspaces/{copy['id']}").json()
        assert copy["status"] == "running"
        assert copy["labels"] == {"team": "a"} and copy["env"]["COLOR"] == "blue"
        assert sh(docker_client, as_alice, copy["id"], "cat /workspace/data.txt /etc/app.conf") == "data\nconf\n"
        assert as_alice.get(f"/api/v1/workspaces/{copy['id']}/snapshots").json()["items"] == []

        # the original is untouched and can go while the copy runs from its snapshot's image
        still = as_alice.get(f"/api/v1/workspaces/{name}").json()
        assert still["connection"]["container_id"] == original["connection"]["container_id"]
        assert wait_op(as_alice, as_alice.delete(f"/api/v1/workspaces/{name}").json()["id"])["status"] == "succeeded"
        assert sh(docker_client, as_alice, copy["id"], "cat /workspace/data.txt") == "data\n"
        wait_op(as_alice, as_alice.delete(f"/api/v1/workspaces/{copy['id']}").json()["id"])
        wait_op(as_alice, as_alice.delete(f"/api/v1/workspaces/{name}-b").json()["id"])
    assert not snapshot_images(docker_client, vmhost_snapshot=taken["id"])


def test_others_cannot_see_or_touch_snapshots_and_read_only_tokens_cannot_take_them(
        daemon: Daemon, api: httpx.Client, name: str) -> None:
    create_ws(api, name)
    snapshot(api, name, "mine")
    with daemon.tcp(daemon.token("mallory")) as other:
        assert other.get(f"/api/v1/workspaces/{name}/snapshots").status_code == 404
        assert other.post(f"/api/v1/workspaces/{name}/snapshots/mine/restore").status_code == 404
    with daemon.tcp(daemon.token("root", scope="read")) as reader:
        assert reader.get(f"/api/v1/workspaces/{name}/snapshots").status_code == 200
        assert reader.post(f"/api/v1/workspaces/{name}/snapshots", json={"name": "x"}).status_code == 403
        assert reader.delete(f"/api/v1/workspaces/{name}/snapshots/mine").status_code == 403


def test_snapshot_commands_through_the_cli(daemon: Daemon, api: httpx.Client, docker_client: docker.DockerClient,
                                           name: str) -> None:
    create_ws(api, name)
    sh(docker_client, api, name, "echo v1 > /workspace/v")
    created = daemon.cli("ws", "snapshot", "create", name, "v1")
    assert created.returncode == 0, created.stderr
    assert "ready" in created.stdout
    listed = daemon.cli("ws", "snapshot", "ls", name)
    assert listed.returncode == 0 and "v1" in listed.stdout and "ready" in listed.stdout

    sh(docker_client, api, name, "echo v2 > /workspace/v")
    restored = daemon.cli("ws", "snapshot", "restore", name, "v1")
    assert restored.returncode == 0, restored.stderr
    assert sh(docker_client, api, name, "cat /workspace/v") == "v1\n"

    copied = daemon.cli("ws", "snapshot", "restore", name, "v1", "--as-new", f"{name}-new", "--json")
    assert copied.returncode == 0, copied.stderr
    assert json.loads(copied.stdout)["status"] == "running"

    removed = daemon.cli("ws", "snapshot", "rm", name, "v1")
    assert removed.returncode == 0 and "deleted snapshot v1" in removed.stdout
    missing = daemon.cli("ws", "snapshot", "rm", name, "v1")
    assert missing.returncode == 3 and "no snapshot 'v1'" in missing.stderr
    for workspace in (name, f"{name}-new"):
        wait_op(api, api.delete(f"/api/v1/workspaces/{workspace}").json()["id"])
