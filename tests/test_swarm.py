"""Workspaces on a real three-node Docker Swarm (tests/cluster.py builds it on this machine): placement and
pinning, stop and start keeping /workspace, commands and files through each node's own engine, the
template's image copied from the manager to the nodes, the nodes' list, and what a node's loss looks like."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster import SwarmCluster
from conftest import Daemon, all_items, create_ws, swarm_env, wait_op

SMALL = {"cpus": 0.25, "memory_mb": 64}  # more than the default (conftest.swarm_env), which Swarm reserves


@pytest.fixture
def drainer(make_daemon: Callable[..., Daemon], cluster: SwarmCluster) -> Daemon:
    """A daemon of the test's own on the cluster: a drain moves its workspaces only (not those the other
    tests left on the node), and Swarm's drain stops theirs."""
    return make_daemon(swarm_env(cluster))


@pytest.fixture
def drainer_api(drainer: Daemon) -> Iterator[httpx.Client]:
    with drainer.client() as client:
        yield client


@pytest.fixture
def swarm_api(swarm_daemon: Daemon) -> Iterator[httpx.Client]:
    with swarm_daemon.client() as client:
        yield client


def act(client: httpx.Client, name: str, action: str) -> dict[str, Any]:
    accepted = client.post(f"/api/v1/workspaces/{name}/actions/{action}")
    assert accepted.status_code == 202, accepted.text
    operation = wait_op(client, accepted.json()["id"], timeout=120)
    assert operation["status"] == "succeeded", (operation["error"], operation.get("output"))
    return client.get(f"/api/v1/workspaces/{name}").json()


def run(client: httpx.Client, name: str, script: str) -> tuple[int, str]:
    answer = client.post(f"/api/v1/workspaces/{name}/commands", json={"argv": ["sh", "-c", script]})
    assert answer.status_code == 202, answer.text
    result = wait_op(client, answer.json()["id"])["result"]
    return result["exit_code"], result["stdout"]


def service_of(cluster: SwarmCluster, workspace: dict[str, Any]) -> dict[str, Any]:
    """The workspace's service, as the manager shows it."""
    with closing(cluster.client(0)) as manager:
        return manager.api.inspect_service(workspace["connection"]["container_id"])


def test_a_workspace_stays_on_its_node_and_keeps_its_files_through_stop_and_start(
        swarm_api: httpx.Client, cluster: SwarmCluster, name: str) -> None:
    accepted = create_ws(swarm_api, name, **SMALL)
    workspace, node = accepted["workspace"], accepted["workspace"]["node"]
    assert node in {n.node_id for n in cluster.nodes}

    assert run(swarm_api, name, "echo kept > /workspace/notes.txt; cat /workspace/notes.txt") == (0, "kept\n")
    stopped = act(swarm_api, name, "stop")
    assert stopped["status"] == "stopped"
    service = service_of(cluster, workspace)["Spec"]
    assert service["Mode"]["Replicated"]["Replicas"] == 0
    assert service["TaskTemplate"]["Placement"]["Constraints"] == [f"node.id=={node}"]  # where its volume is
    refused = swarm_api.post(f"/api/v1/workspaces/{name}/commands", json={"argv": ["true"]})
    assert refused.status_code == 409 and "start it" in refused.json()["detail"]
    # its files, through a container made for them on its node
    files = f"/api/v1/workspaces/{name}/files"
    assert swarm_api.get(files, params={"path": "notes.txt"}).text == "kept\n"
    assert swarm_api.put(files, params={"path": "while-stopped.txt"}, content=b"written\n").status_code == 200
    lost = swarm_api.put(files, params={"path": "/etc/lost.txt"}, content=b"x")
    assert lost.status_code == 409 and "only /workspace keeps what is written while it is stopped, not " \
        "/etc/lost.txt" in lost.json()["detail"], lost.text

    started = act(swarm_api, name, "start")
    assert (started["status"], started["node"]) == ("running", node)
    assert run(swarm_api, name, "cat /workspace/notes.txt /workspace/while-stopped.txt") == (0, "kept\nwritten\n")
    read = swarm_api.get(f"/api/v1/workspaces/{name}/files", params={"path": "/workspace/notes.txt"})
    assert read.status_code == 200 and read.text == "kept\n"

    restarted = act(swarm_api, name, "restart")
    assert (restarted["status"], restarted["node"]) == ("running", node)
    assert run(swarm_api, name, "cat /workspace/notes.txt") == (0, "kept\n")

    deleted = swarm_api.delete(f"/api/v1/workspaces/{name}")
    assert deleted.status_code == 202
    assert wait_op(swarm_api, deleted.json()["id"], timeout=120)["status"] == "succeeded"
    managed = {"label": [f"vmhost.workspace={workspace['id']}"]}
    for node in cluster.nodes:
        with closing(cluster.client(node.index)) as engine:
            assert engine.api.services(filters=managed) == [] if node.index == 0 else True
            assert engine.volumes.list(filters=managed) == []


def test_a_templates_image_that_only_the_manager_has_is_copied_to_the_nodes(
        cluster: SwarmCluster, test_image: str, tmp_path: Path, name: str) -> None:
    image = f"vmhost-test-copied:{name}"
    with closing(cluster.client(0)) as manager:
        manager.images.get(test_image).tag(image)
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "base.toml").write_text(f'image = "{image}"\n')
    daemon = Daemon(templates, swarm_env(cluster)).start()
    try:
        with daemon.client() as api:
            accepted = create_ws(api, name)
            output = api.get(f"/api/v1/operations/{accepted['operation']['id']}").json()["output"]
            assert output.count(f"copying image {image} from {cluster.manager_url} to unix://") == 2, output
            assert output.count("copied ") == 2, output
            assert run(api, name, "echo here") == (0, "here\n")
            wait_op(api, api.delete(f"/api/v1/workspaces/{name}").json()["id"], timeout=120)
    finally:
        daemon.cleanup()


def test_workspaces_spread_over_the_nodes_which_the_cli_lists(swarm_daemon: Daemon, swarm_api: httpx.Client,
                                                               cluster: SwarmCluster, test_image: str,
                                                               name: str) -> None:
    names = [f"{name}-{i}" for i in range(3)]
    accepted = [create_ws(swarm_api, n, wait=False, **SMALL) for n in names]
    with ThreadPoolExecutor(3) as pool:
        done = list(pool.map(lambda a: wait_op(swarm_api, a["operation"]["id"], timeout=180), accepted))
    assert [o["status"] for o in done] == ["succeeded"] * 3, done
    placed = {swarm_api.get(f"/api/v1/workspaces/{n}").json()["node"] for n in names}
    assert len(placed) >= 2, placed  # Swarm spreads one-replica services over the nodes

    listed = swarm_daemon.cli("nodes", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    nodes = {n["id"]: n for n in json.loads(listed.stdout)}
    assert set(nodes) == {n.node_id for n in cluster.nodes}
    assert {n["engine_url"] for n in nodes.values()} == {n.socket for n in cluster.nodes}
    assert all(n["state"] == "ready" for n in nodes.values())
    assert sum(n["workspaces"] for n in nodes.values()) >= 3
    for node in placed:
        assert nodes[node]["cpus_reserved"] >= SMALL["cpus"]
    table = swarm_daemon.cli("nodes", "ls")
    assert table.returncode == 0 and "HOSTNAME" in table.stdout and "manager" in table.stdout
    shown = swarm_daemon.cli("ws", "ls")
    assert "NODE" in shown.stdout
    doctor = {c["name"]: c for c in json.loads(swarm_daemon.cli("doctor", "--json").stdout)["checks"]}
    for node in cluster.nodes:  # the built-in templates' public images are on none of them
        checked = doctor[f"node {node.name} ({node.node_id[:12]})"]["detail"]
        assert "is not there" in checked and test_image not in checked and "does not answer" not in checked, checked
    for node in placed:
        hostname = next(n.name for n in cluster.nodes if n.node_id == node)
        disk = doctor[f"disk (node {hostname} ({node[:12]}))"]
        assert disk["ok"] and "GiB free" in disk["detail"], disk
    for n in names:
        deleted = swarm_api.delete(f"/api/v1/workspaces/{n}")
        assert wait_op(swarm_api, deleted.json()["id"], timeout=120)["status"] == "succeeded"


def test_a_workspace_no_node_can_hold_is_refused_at_once(swarm_api: httpx.Client, name: str) -> None:
    # more memory than any node here has (each has the machine's)
    refused = swarm_api.post("/api/v1/workspaces", json={"name": name, "template": "base", "memory_mb": 1_000_000})
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "no_room"
    assert refused.json()["detail"].startswith("no node has 0.05 CPUs and 1000000 MB free (3 nodes ready of 3; "
                                               "the most free: ")
    assert swarm_api.get(f"/api/v1/workspaces/{name}").status_code == 404


def wait_status(client: httpx.Client, name: str, wanted: set[str], timeout: float) -> tuple[dict[str, Any], float]:
    """The workspace once its status is one of `wanted`, and how many seconds that took."""
    started = time.monotonic()
    while True:
        workspace = client.get(f"/api/v1/workspaces/{name}").json()
        if workspace["status"] in wanted:
            return workspace, time.monotonic() - started
        assert time.monotonic() - started < timeout, workspace
        time.sleep(0.5)


def test_a_node_that_dies_makes_its_workspaces_unreachable_until_it_is_back(
        swarm_daemon: Daemon, swarm_api: httpx.Client, cluster: SwarmCluster, name: str) -> None:
    workers = {n.node_id: n.index for n in cluster.nodes if n.index != 0}
    made = []
    for i in range(len(cluster.nodes)):  # Swarm spreads them: one lands on a worker
        made.append(create_ws(swarm_api, f"{name}-{i}", **SMALL)["workspace"])
        if made[-1]["node"] in workers:
            break
    victim, others = made[-1], made[:-1]
    assert run(swarm_api, victim["name"], "echo before > /workspace/kept") == (0, "")
    events = swarm_api.get("/api/v1/events", params={"limit": 1000}).json()

    cluster.kill_node(workers[victim["node"]])
    unreachable, seconds = wait_status(swarm_api, victim["name"], {"unreachable"}, timeout=30)
    assert unreachable["status_reason"] == f"its node {cluster.nodes[workers[victim['node']]].name} " \
                                          f"({victim['node'][:12]}) is down"
    refused = swarm_daemon.cli("ws", "start", victim["name"])
    assert refused.returncode == 4 and "is unreachable: its node" in refused.stderr, refused.stderr
    listed = swarm_daemon.cli("ws", "ls")
    assert "unreachable" in listed.stdout
    nodes = swarm_daemon.cli("nodes", "ls")
    assert "down" in nodes.stdout
    for other in others:  # the rest of the cluster keeps working
        assert run(swarm_api, other["name"], "echo alive") == (0, "alive\n")
    changed = [e for e in swarm_api.get("/api/v1/events", params={"since": events["items"][-1]["id"]}).json()["items"]
               if e["type"] == "workspace.status" and e["workspace_id"] == victim["id"]]
    assert changed[0]["payload"]["status"] == "unreachable"
    print(f"\nunreachable after {seconds:.1f} s\n{listed.stdout}\n{nodes.stdout}")

    cluster.restart_node(workers[victim["node"]])
    try:
        back, _ = wait_status(swarm_api, victim["name"], {"running", "stopped"}, timeout=60)
    except AssertionError:
        print(swarm_daemon.log()[-8000:])  # what the node watch and the reconciler met
        raise
    if back["status"] == "stopped":
        act(swarm_api, victim["name"], "start")
    assert run(swarm_api, victim["name"], "cat /workspace/kept") == (0, "before\n")
    for workspace in made:
        deleted = swarm_api.delete(f"/api/v1/workspaces/{workspace['name']}")
        assert wait_op(swarm_api, deleted.json()["id"], timeout=120)["status"] == "succeeded"


def test_snapshots_restores_and_rebuild_stay_on_the_workspaces_node(swarm_api: httpx.Client, cluster: SwarmCluster,
                                                                   name: str) -> None:
    workspace = create_ws(swarm_api, name, **SMALL)["workspace"]
    node = workspace["node"]
    assert run(swarm_api, name, "echo data > /workspace/data.txt; echo conf > /etc/app.conf") == (0, "")
    taken = swarm_api.post(f"/api/v1/workspaces/{name}/snapshots", json={"name": "v1"})
    assert taken.status_code == 202, taken.text
    assert wait_op(swarm_api, taken.json()["operation"]["id"])["status"] == "succeeded"
    assert run(swarm_api, name, "echo later > /workspace/data.txt; rm /etc/app.conf") == (0, "")

    restored = swarm_api.post(f"/api/v1/workspaces/{name}/snapshots/v1/restore", json={})
    assert restored.status_code == 202, restored.text
    assert wait_op(swarm_api, restored.json()["operation"]["id"], timeout=120)["status"] == "succeeded"
    again = swarm_api.get(f"/api/v1/workspaces/{name}").json()
    assert (again["status"], again["node"]) == ("running", node)
    assert run(swarm_api, name, "cat /workspace/data.txt /etc/app.conf") == (0, "data\nconf\n")

    copied = swarm_api.post(f"/api/v1/workspaces/{name}/snapshots/v1/restore", json={"as_new": f"{name}-copy"})
    assert copied.status_code == 202, copied.text
    assert wait_op(swarm_api, copied.json()["operation"]["id"], timeout=120)["status"] == "succeeded"
    copy = swarm_api.get(f"/api/v1/workspaces/{name}-copy").json()
    assert (copy["status"], copy["node"]) == ("running", node)  # the snapshot's image is on that node
    assert run(swarm_api, f"{name}-copy", "cat /workspace/data.txt /etc/app.conf") == (0, "data\nconf\n")

    rebuilt = act(swarm_api, name, "rebuild")
    assert (rebuilt["status"], rebuilt["node"]) == ("running", node)
    assert run(swarm_api, name, "cat /workspace/data.txt; test -e /etc/app.conf || echo fresh") == (0, "data\nfresh\n")
    with swarm_api.stream("GET", f"/api/v1/workspaces/{name}/logs") as logs:
        assert logs.status_code == 200

    for gone in (f"{name}-copy", name):
        deleted = swarm_api.delete(f"/api/v1/workspaces/{gone}")
        assert wait_op(swarm_api, deleted.json()["id"], timeout=120)["status"] == "succeeded"
    snapshot_label = {"label": [f"vmhost.snapshot={taken.json()['snapshot']['id']}"]}
    for each in cluster.nodes:
        with closing(cluster.client(each.index)) as engine:
            assert engine.images.list(filters=snapshot_label) == []


@contextmanager
def others_paused(cluster: SwarmCluster, node: str) -> Iterator[None]:
    """Every node but `node` takes no new work for a while (Swarm's availability `pause`)."""
    with closing(cluster.client(0)) as manager:
        others = [manager.nodes.get(n.node_id) for n in cluster.nodes if n.node_id != node]
        try:
            for other in others:
                other.update({**other.attrs["Spec"], "Availability": "pause"})
                other.reload()
            yield
        finally:
            for other in others:
                other.update({**other.attrs["Spec"], "Availability": "active"})


def test_drain_moves_a_nodes_workspaces_with_their_files_and_activate_undoes_it(
        drainer: Daemon, drainer_api: httpx.Client, cluster: SwarmCluster, name: str) -> None:
    workers = {n.node_id for n in cluster.nodes if n.index != 0}
    made = []
    for i in range(len(cluster.nodes)):  # drain a worker: the manager is also where vmhost's calls go
        made.append(create_ws(drainer_api, f"{name}-a{i}", **SMALL)["workspace"])
        if made[-1]["node"] in workers:
            break
    running, node = made[-1], made[-1]["node"]
    with others_paused(cluster, node):  # a stopped one on the node too: it moves without starting
        stopped = create_ws(drainer_api, f"{name}-b", **SMALL)["workspace"]
    assert stopped["node"] == node
    for workspace in (running, stopped):
        assert run(drainer_api, workspace["name"], f"echo {workspace['name']} > /workspace/data.txt; "
                                                 "echo conf > /etc/app.conf") == (0, "")
    act(drainer_api, stopped["name"], "stop")
    on_node = [w for w in (*made, stopped) if w["node"] == node]

    drained = drainer.cli("nodes", "drain", node[:12])
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.strip() == f"drain {node[:12]}: {len(on_node)} moved, 0 stayed; node state drain"
    for workspace in on_node:
        moved = drainer_api.get(f"/api/v1/workspaces/{workspace['id']}").json()
        assert moved["node"] != node and moved["status"] == ("running" if workspace is running else "stopped")
    act(drainer_api, stopped["name"], "start")
    # the running one kept its container's filesystem; a stop on Swarm makes the container again
    assert run(drainer_api, running["name"], "cat /workspace/data.txt /etc/app.conf") == \
        (0, f"{running['name']}\nconf\n")
    assert run(drainer_api, stopped["name"], "cat /workspace/data.txt") == (0, f"{stopped['name']}\n")
    nodes = {n["id"]: n for n in all_items(drainer_api, "/api/v1/nodes")}
    assert (nodes[node]["state"], nodes[node]["workspaces"]) == ("drain", 0)
    elsewhere = create_ws(drainer_api, f"{name}-c", **SMALL)["workspace"]
    assert elsewhere["node"] != node

    activated = drainer.cli("nodes", "activate", node)
    assert activated.returncode == 0 and activated.stdout.strip().endswith(": ready"), activated.stderr
    for workspace in (*made, stopped, elsewhere):
        deleted = drainer_api.delete(f"/api/v1/workspaces/{workspace['id']}")
        assert wait_op(drainer_api, deleted.json()["id"], timeout=120)["status"] == "succeeded"


def test_a_workspace_no_other_node_has_room_for_stays_through_a_drain(
        drainer: Daemon, drainer_api: httpx.Client, cluster: SwarmCluster, name: str) -> None:
    workspace = create_ws(drainer_api, name, **SMALL)["workspace"]
    node = workspace["node"]
    assert run(drainer_api, name, "echo mine > /workspace/data.txt") == (0, "")
    with others_paused(cluster, node):  # no room anywhere else
        drained = drainer.cli("nodes", "drain", node)
    assert drained.returncode == 4, (drained.stdout, drained.stderr)
    assert drained.stdout.strip() == f"drain {node}: 0 moved, 1 stayed; node state paused"
    assert drained.stderr.startswith(f"{name}: stays: no node has 0.25 CPUs and 64 MB free (0 nodes ready "
                                     "of 3; none is ready)"), drained.stderr
    kept = drainer_api.get(f"/api/v1/workspaces/{name}").json()
    assert (kept["status"], kept["node"]) == ("running", node)
    assert run(drainer_api, name, "cat /workspace/data.txt") == (0, "mine\n")
    nodes = {n["id"]: n for n in all_items(drainer_api, "/api/v1/nodes")}
    assert nodes[node]["state"] == "paused"
    assert drainer.cli("nodes", "activate", node).returncode == 0
    deleted = drainer_api.delete(f"/api/v1/workspaces/{name}")
    assert wait_op(drainer_api, deleted.json()["id"], timeout=120)["status"] == "succeeded"
