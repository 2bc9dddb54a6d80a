"""What a user's quota counts is what their containers get: CPU, memory (no swap beyond it) and process
limits, rotated logs, a disk budget for snapshots; and each owner's containers on a network of their own."""

from __future__ import annotations

import threading
from typing import Any

import docker
import httpx
from conftest import create_ws, wait_op

MIB = 1024 * 1024


def container(docker_client: docker.DockerClient, client: httpx.Client, ref: str) -> Any:
    workspace = client.get(f"/api/v1/workspaces/{ref}").json()
    return docker_client.containers.get(workspace["connection"]["container_id"])


def sh(docker_client: docker.DockerClient, client: httpx.Client, ref: str, script: str) -> tuple[int, str]:
    result = container(docker_client, client, ref).exec_run(["sh", "-c", script])
    return result.exit_code, result.output.decode(errors="replace")


def test_a_workspace_without_limits_gets_the_quota_defaults_as_real_limits(make_daemon, docker_client,
                                                                           name: str) -> None:
    process = make_daemon({"VMHOST_QUOTA_DEFAULT_CPUS": "0.5", "VMHOST_QUOTA_DEFAULT_MEMORY_MB": "96",
                           "VMHOST_QUOTA_MAX_PIDS": "300", "VMHOST_QUOTA_MAX_WORKSPACES": "3"})
    with process.tcp(process.token("alice")) as alice:
        create_ws(alice, name)  # neither it nor the base template sets cpus or memory_mb
        create_ws(alice, f"{name}-set", cpus=0.25, memory_mb=64)
        assert alice.get("/api/v1/me").json()["quota"]["usage"]["memory_mb"] == 96 + 64

        defaults = container(docker_client, alice, name).attrs["HostConfig"]
        assert defaults["NanoCpus"] == 500_000_000
        assert defaults["Memory"] == 96 * MIB and defaults["MemorySwap"] == 96 * MIB
        assert defaults["PidsLimit"] == 100  # 300 processes for the user's 3 workspaces
        assert defaults["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}

        chosen = container(docker_client, alice, f"{name}-set").attrs["HostConfig"]
        assert chosen["NanoCpus"] == 250_000_000
        assert chosen["Memory"] == 64 * MIB and chosen["MemorySwap"] == 64 * MIB
        assert chosen["PidsLimit"] == 100

        # the process limit holds inside: 100 sleeps cannot all start
        code, _ = sh(docker_client, alice, name, "for i in $(seq 120); do sleep 30 & done")
        assert code != 0

        # the split follows an admin's change of the user's quota, from the next rebuild on
        with process.client() as admin:
            assert admin.put("/api/v1/quotas/alice", json={"max_pids": 1000, "max_workspaces": 4}).status_code == 200
        assert wait_op(alice, alice.post(f"/api/v1/workspaces/{name}/rebuild").json()["id"])["status"] == "succeeded"
        assert container(docker_client, alice, name).attrs["HostConfig"]["PidsLimit"] == 250
        assert alice.get("/api/v1/quotas/alice").json()["limits"]["max_pids"] == 1000


def test_a_snapshot_past_the_disk_budget_is_refused_and_leaves_nothing_behind(make_daemon, docker_client,
                                                                              name: str) -> None:
    process = make_daemon({"VMHOST_QUOTA_MAX_SNAPSHOT_BYTES": str(200 * 1024)})
    with process.tcp(process.token("alice")) as alice:
        workspace = create_ws(alice, name)["workspace"]
        assert sh(docker_client, alice, name, "head -c 100000 /dev/urandom > /workspace/small")[0] == 0
        small = alice.post(f"/api/v1/workspaces/{name}/snapshots", json={"name": "small"}).json()
        assert wait_op(alice, small["operation"]["id"])["status"] == "succeeded"
        taken = alice.get(f"/api/v1/workspaces/{name}/snapshots/small").json()
        assert alice.get("/api/v1/me").json()["quota"]["usage"]["snapshot_bytes"] == taken["size_bytes"]

        # one that would push past the budget is stopped while it is written, and discarded
        assert sh(docker_client, alice, name, "head -c 300000 /dev/urandom > /workspace/big")[0] == 0
        big = alice.post(f"/api/v1/workspaces/{name}/snapshots", json={"name": "big"}).json()
        failed = wait_op(alice, big["operation"]["id"])
        assert failed["status"] == "failed"
        assert failed["error"] == (f"quota exceeded: alice's snapshots may take {200 * 1024} bytes and this one needs "
                                   f"more than the {200 * 1024 - taken['size_bytes']} left; it was discarded "
                                   "(delete snapshots to make room)")
        assert [s["name"] for s in alice.get(f"/api/v1/workspaces/{name}/snapshots").json()["items"]] == ["small"]
        assert [p.name for p in (process.dir / "snapshots" / workspace["id"]).iterdir()] == [f"{taken['id']}.tar"]
        assert not docker_client.images.list(filters={"label": f"vmhost.snapshot={big['snapshot']['id']}"})

        # once the budget is full, the request itself is refused
        with process.client() as admin:
            admin.put("/api/v1/quotas/alice", json={"max_snapshot_bytes": taken["size_bytes"]}).raise_for_status()
        refused = alice.post(f"/api/v1/workspaces/{name}/snapshots", json={"name": "more"})
        assert refused.status_code == 403
        assert refused.json() == {
            "detail": f"quota exceeded: alice's snapshots take {taken['size_bytes']} of {taken['size_bytes']} bytes; "
                      "delete snapshots to make room",
            "code": "quota_exceeded"}
        alice.delete(f"/api/v1/workspaces/{name}/snapshots/small").raise_for_status()
        again = alice.post(f"/api/v1/workspaces/{name}/snapshots", json={"name": "more"})
        assert again.status_code == 202, again.text
        wait_op(alice, again.json()["operation"]["id"])


def network_of(docker_client: docker.DockerClient, client: httpx.Client, ref: str) -> tuple[str, str]:
    """(network name, address) of the workspace's container."""
    (network, settings), = container(docker_client, client, ref).attrs["NetworkSettings"]["Networks"].items()
    return network, settings["IPAddress"]


def fetch_from(docker_client: docker.DockerClient, client: httpx.Client, ref: str, address: str) -> tuple[int, str]:
    """GET /hello from port 8000 at `address`, from inside a workspace (busybox's static wget cannot)."""
    return sh(docker_client, client, ref, f"printf 'GET /hello HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {address} 8000")


def test_owners_are_on_networks_of_their_own(make_daemon, docker_client, name: str) -> None:
    process = make_daemon()
    instance_networks = {"label": f"vmhost.instance={process.instance}"}
    with process.tcp(process.token("alice")) as alice, process.tcp(process.token("bob")) as bob:
        create_ws(alice, name)
        create_ws(bob, name)
        create_ws(bob, f"{name}-2")
        serve = "echo hello-from-bob > /workspace/hello && httpd -p 8000 -h /workspace"
        assert sh(docker_client, bob, name, serve)[0] == 0
        bob_network, bob_address = network_of(docker_client, bob, name)
        alice_network, _ = network_of(docker_client, alice, name)
        assert network_of(docker_client, bob, f"{name}-2")[0] == bob_network
        assert alice_network != bob_network and "bridge" not in (alice_network, bob_network)
        labels = docker_client.networks.get(bob_network).attrs["Labels"]
        assert labels["vmhost.owner"] == "bob" and labels["vmhost.instance"] == process.instance

        code, output = fetch_from(docker_client, bob, f"{name}-2", bob_address)
        assert code == 0 and output.endswith("\r\n\r\nhello-from-bob\n"), output
        code, output = fetch_from(docker_client, alice, name, bob_address)
        assert code != 0 and "hello-from-bob" not in output, output

        # published ports reach the host's publish address as before
        web = create_ws(alice, f"{name}-web", template="web")["workspace"]
        assert sh(docker_client, alice, f"{name}-web", "echo hello-web > /workspace/hello && "
                                                       "httpd -p 8080 -h /workspace")[0] == 0
        published = web["connection"]["ports"]["8080/tcp"]
        assert httpx.get(f"http://{published}/hello", timeout=10).text == "hello-web\n"

        # an owner's network goes with their last workspace
        wait_op(alice, alice.delete(f"/api/v1/workspaces/{name}").json()["id"])
        assert {n.name for n in docker_client.networks.list(filters=instance_networks)} == {alice_network,
                                                                                           bob_network}
        wait_op(alice, alice.delete(f"/api/v1/workspaces/{name}-web").json()["id"])
        wait_op(bob, bob.delete(f"/api/v1/workspaces/{name}").json()["id"])
        assert {n.name for n in docker_client.networks.list(filters=instance_networks)} == {bob_network}
        wait_op(bob, bob.delete(f"/api/v1/workspaces/{name}-2").json()["id"])
    assert docker_client.networks.list(filters=instance_networks) == []


def test_network_names_stay_apart_for_user_names_docker_does_not_allow(orchestrator) -> None:
    plain = orchestrator.network_for("alice")
    assert plain.name == f"vmhost-{orchestrator.instance}-alice"
    assert plain.labels["vmhost.owner"] == "alice"
    odd, similar = orchestrator.network_for("a+b@example.com"), orchestrator.network_for("a-b@example.com")
    assert odd.name.startswith(f"vmhost-{orchestrator.instance}-a-b-example.com-") and odd.name != similar.name


def test_creates_and_rebuilds_survive_the_janitor_removing_idle_networks(orchestrator) -> None:
    """Docker lets a network go while its only containers are created but not started: a create or
    rebuild racing the janitor's sweep makes the network again instead of failing."""
    from vmhost.core.models import Caller
    from vmhost.core.orchestrator import WorkspaceRequest

    store, alice = orchestrator.store, Caller(user="alice")
    done = threading.Event()

    def janitor() -> None:
        while not done.is_set():
            orchestrator.release_networks()

    sweeper = threading.Thread(target=janitor)
    sweeper.start()
    try:
        for number in range(2):
            _, operation = orchestrator.create(alice, WorkspaceRequest(name=f"w{number}"))
            assert store.wait_operation(operation.id, 60).error is None
            assert store.wait_operation(orchestrator.rebuild(alice, f"w{number}").id, 60).error is None
            assert store.wait_operation(orchestrator.delete(alice, f"w{number}").id, 60).error is None
    finally:
        done.set()
        sweeper.join()
    assert orchestrator.engine.list_managed(orchestrator.instance_labels, kinds=("network",)) == []
