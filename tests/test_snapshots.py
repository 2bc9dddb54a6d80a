"""Snapshots: a workspace's filesystem and /workspace, taken, restored in place or as a new workspace,
and purged with the workspace, checked against what Docker and the disk really hold: on one engine and on
a three-node Swarm (`on_engine`), where the image is committed on the workspace's node."""

from __future__ import annotations

import json
import stat

import httpx
from conftest import Daemon, OnEngine, create_ws, wait_op


def sh(on_engine: OnEngine, api: httpx.Client, name: str, script: str) -> str:
    """Run a shell line in the workspace's current container, straight on its engine."""
    return on_engine.sh(api.get(f"/api/v1/workspaces/{name}").json(), script)


def snapshot(client: httpx.Client, workspace: str, snapshot_name: str) -> dict:
    response = client.post(f"/api/v1/workspaces/{workspace}/snapshots", json={"name": snapshot_name})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == f"/api/v1/operations/{accepted['operation']['id']}"
    assert accepted["snapshot"]["status"] == "creating" and accepted["operation"]["type"] == "snapshot"
    assert wait_op(client, accepted["operation"]["id"])["status"] == "succeeded"
    return client.get(f"/api/v1/workspaces/{workspace}/snapshots/{snapshot_name}").json()


def test_restore_in_place_brings_back_the_filesystem_and_workspace_then_delete_purges_everything(
        on_engine: OnEngine, engine_api: httpx.Client, name: str) -> None:
    daemon = on_engine.daemon
    workspace = create_ws(engine_api, name)["workspace"]
    sh(on_engine, engine_api, name, "echo kept > /workspace/kept.txt && echo fs > /etc/marker")

    taken = snapshot(engine_api, name, "before")
    assert taken["status"] == "ready"
    assert taken["volume_bytes"] > 0 and taken["size_bytes"] == taken["image_bytes"] + taken["volume_bytes"]
    images = on_engine.images(vmhost_snapshot=taken["id"])
    assert len(images) == 1
    assert images[0].labels["vmhost.workspace"] == workspace["id"]
    assert images[0].labels["vmhost.instance"] == daemon.instance
    archives = list((daemon.dir / "snapshots" / workspace["id"]).glob("*.tar"))
    assert [a.stat().st_size for a in archives] == [taken["volume_bytes"]]
    assert [stat.S_IMODE(p.stat().st_mode) for p in (daemon.dir / "snapshots", archives[0].parent, archives[0])] \
        == [0o700, 0o700, 0o600]  # whatever the umask: the volume's files are the owner's

    # names are unique per workspace, and follow the rules of workspace names
    duplicate = engine_api.post(f"/api/v1/workspaces/{name}/snapshots", json={"name": "before"})
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "name_taken"
    assert engine_api.post(f"/api/v1/workspaces/{name}/snapshots", json={"name": "Bad_Name"}).status_code == 422
    assert engine_api.get(f"/api/v1/workspaces/{name}/snapshots/nope").json()["code"] == "snapshot_not_found"

    sh(on_engine, engine_api, name, "rm /workspace/kept.txt /etc/marker && echo new > /workspace/added.txt "
                                 "&& echo later > /etc/later")
    response = engine_api.post(f"/api/v1/workspaces/{name}/snapshots/before/restore")
    assert response.status_code == 202
    assert response.headers["location"].endswith(response.json()["operation"]["id"])
    assert wait_op(engine_api, response.json()["operation"]["id"])["status"] == "succeeded"

    restored = engine_api.get(f"/api/v1/workspaces/{name}").json()
    assert restored["status"] == "running"
    assert sh(on_engine, engine_api, name, "cat /workspace/kept.txt /etc/marker") == "kept\nfs\n"
    assert "added.txt" not in sh(on_engine, engine_api, name, "ls /workspace")
    assert "later" not in sh(on_engine, engine_api, name, "ls /etc")
    assert [s["name"] for s in engine_api.get(f"/api/v1/workspaces/{name}/snapshots").json()["items"]] == ["before"]

    wait_op(engine_api, engine_api.delete(f"/api/v1/workspaces/{name}").json()["id"])
    assert not on_engine.images(vmhost_workspace=workspace["id"])
    assert not (daemon.dir / "snapshots" / workspace["id"]).exists()


def test_restore_of_a_stopped_workspace_leaves_it_stopped(on_engine: OnEngine, engine_api: httpx.Client,
                                                         name: str) -> None:
    create_ws(engine_api, name)
    sh(on_engine, engine_api, name, "echo one > /workspace/file")
    snapshot(engine_api, name, "one")
    sh(on_engine, engine_api, name, "echo two > /workspace/file")
    wait_op(engine_api, engine_api.post(f"/api/v1/workspaces/{name}/stop").json()["id"])

    operation = engine_api.post(f"/api/v1/workspaces/{name}/snapshots/one/restore", json={}).json()["operation"]
    assert wait_op(engine_api, operation["id"])["status"] == "succeeded"
    workspace = engine_api.get(f"/api/v1/workspaces/{name}").json()
    assert workspace["status"] == "stopped"
    assert engine_api.get(f"/api/v1/workspaces/{name}/files", params={"path": "/workspace/file"}).text == "one\n"


def test_restore_as_new_belongs_to_the_caller_and_outlives_the_original(on_docker: OnEngine, name: str) -> None:
    """On Swarm, test_swarm restores as new too: the copy lands on the snapshot's node."""
    daemon = on_docker.daemon
    alice = daemon.token("alice")
    with daemon.tcp(alice) as as_alice:
        original = create_ws(as_alice, name, labels={"team": "a"}, env={"COLOR": "blue"})["workspace"]
        sh(on_docker, as_alice, name, "echo data > /workspace/data.txt && echo conf > /etc/app.conf")
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
        assert sh(on_docker, as_alice, copy["id"], "cat /workspace/data.txt /etc/app.conf") == "data\nconf\n"
        assert as_alice.get(f"/api/v1/workspaces/{copy['id']}/snapshots").json()["items"] == []

        # the original is untouched and can go while the copy runs from its snapshot's image
        still = as_alice.get(f"/api/v1/workspaces/{name}").json()
        assert still["connection"]["container_id"] == original["connection"]["container_id"]
        assert wait_op(as_alice, as_alice.delete(f"/api/v1/workspaces/{name}").json()["id"])["status"] == "succeeded"
        assert sh(on_docker, as_alice, copy["id"], "cat /workspace/data.txt") == "data\n"
        wait_op(as_alice, as_alice.delete(f"/api/v1/workspaces/{copy['id']}").json()["id"])
        wait_op(as_alice, as_alice.delete(f"/api/v1/workspaces/{name}-b").json()["id"])
    assert not on_docker.images(vmhost_snapshot=taken["id"])


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


def test_snapshot_commands_through_the_cli(daemon: Daemon, api: httpx.Client, on_docker: OnEngine,
                                           name: str) -> None:
    create_ws(api, name)
    sh(on_docker, api, name, "echo v1 > /workspace/v")
    created = daemon.cli("ws", "snapshot", "create", name, "v1")
    assert created.returncode == 0, created.stderr
    assert "ready" in created.stdout
    listed = daemon.cli("ws", "snapshot", "ls", name)
    assert listed.returncode == 0 and "v1" in listed.stdout and "ready" in listed.stdout

    sh(on_docker, api, name, "echo v2 > /workspace/v")
    restored = daemon.cli("ws", "snapshot", "restore", name, "v1")
    assert restored.returncode == 0, restored.stderr
    assert sh(on_docker, api, name, "cat /workspace/v") == "v1\n"

    copied = daemon.cli("ws", "snapshot", "restore", name, "v1", "--as-new", f"{name}-new", "--json")
    assert copied.returncode == 0, copied.stderr
    assert json.loads(copied.stdout)["status"] == "running"

    removed = daemon.cli("ws", "snapshot", "rm", name, "v1")
    assert removed.returncode == 0 and "deleted snapshot v1" in removed.stdout
    missing = daemon.cli("ws", "snapshot", "rm", name, "v1")
    assert missing.returncode == 3 and "no snapshot 'v1'" in missing.stderr
    for workspace in (name, f"{name}-new"):
        wait_op(api, api.delete(f"/api/v1/workspaces/{workspace}").json()["id"])
