"""The Swarm rows: vmhost on a three-node Swarm built on this machine (tests/cluster.py: a dockerd per
network namespace), against the same work done straight through the docker SDK on the same cluster in
the same run: `services.create` (on an overlay network, as a workspace is on its owner's) then waiting for
the task to run, exec through the node's own engine, and scaling the service to 0 and back to 1. A port
through the preview, which reaches it through the workspace's node (vmhost.core.port_relay), against the
same relay by hand: `nc 127.0.0.1 8080` exec'd in the task's container through its node's engine."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import docker
from docker.types import Mount, Resources, RestartPolicy, ServiceMode
from docker.utils.socket import frames_iter

from bench.environment import COMMAND, Bench
from bench.measure import Plan, Result, Target, paired
from bench.ports import DOWNLOAD_MB, SERVERS, http_get, rates
from tests.cluster import SwarmCluster, swarm_cluster

API = "/api/v1"
WAIT = 120
POLL = 0.1  # as vmhost's SwarmEngine looks at tasks
CPUS, MEMORY_MB = 0.25, 64
NETWORK = "bench-sdk"


def swarm_rows(bench: Bench, plan: Plan) -> list[Result]:
    with swarm_cluster(3) as cluster:
        cluster.load_image(bench.image, bench.docker)
        daemon = bench.daemon(env={"VMHOST_ENGINE": "swarm", "VMHOST_DOCKER_HOST": cluster.manager_url})
        try:
            with daemon.client(timeout=WAIT + 30) as api, closing(cluster.client(0)) as manager:
                # the services join an overlay network of their own, as a workspace joins its owner's
                manager.networks.create(NETWORK, driver="overlay", attachable=True, labels=bench.labels)
                return _measure(bench, cluster, api, manager, plan)
        finally:
            daemon.cleanup()


def _measure(bench: Bench, cluster: SwarmCluster, api: Any, manager: docker.DockerClient, plan: Plan) -> list[Result]:
    names = iter(range(10**6))
    made: list[str] = []  # workspaces, then services, to remove between rounds

    def create_workspace(_: int) -> None:
        made.append(_create_workspace(api, f"ws-{next(names)}"))

    def create_service(_: int) -> None:
        made.append(_create_service(bench, manager, f"sdk-{next(names)}"))

    def clean(_: int) -> None:
        for ref in made:
            if ref.startswith("ws_"):
                _wait(api, api.delete(f"{API}/workspaces/{ref}"))
            else:
                manager.api.remove_service(ref)
        made.clear()

    create, create_sdk = paired(plan, create_workspace, create_service, between=clean)
    results = [Result("swarm: create -> running (POST + wait)", "ms", create, create_sdk,
                      "services.create + task running", Target(max_ratio=1.5))]

    workspace = _create_workspace(api, "ws-kept")
    service = _create_service(bench, manager, "sdk-kept")
    try:
        engines = {n.node_id: n.index for n in cluster.nodes}

        def exec_workspace(_: int) -> None:
            answer = api.post(f"{API}/workspaces/{workspace}/commands", json={"argv": ["echo", "hi"], "stream": True})
            if answer.status_code != 200 or "hi" not in answer.text:
                raise RuntimeError(f"command answered {answer.status_code}: {answer.text[:300]}")

        def exec_service(_: int) -> None:
            task = _running_task(manager, service)
            with closing(cluster.client(engines[task["NodeID"]])) as node:
                container = node.containers.get(task["Status"]["ContainerStatus"]["ContainerID"])
                if container.exec_run(["echo", "hi"]).output != b"hi\n":
                    raise RuntimeError("exec did not answer hi")

        vmhost, sdk = paired(plan, exec_workspace, exec_service)
        results.append(Result("swarm: command echo hi (stream)", "ms", vmhost, sdk,
                              "task lookup + exec_run on its node", Target(max_ratio=1.5)))

        def act(action: str) -> Callable[[int], None]:
            return lambda _: _wait(api, api.post(f"{API}/workspaces/{workspace}/actions/{action}"))

        def scale(replicas: int) -> Callable[[int], None]:
            return lambda _: _scale(manager, service, replicas)

        for action, replicas, undo in (("stop", 0, ("start", 1)), ("start", 1, ("stop", 0))):
            if action == "start":
                act("stop")(0)
                scale(0)(0)

            def back(_: int, undo: tuple[str, int] = undo) -> None:
                act(undo[0])(0)
                scale(undo[1])(0)

            vmhost, sdk = paired(plan, act(action), scale(replicas), between=back)
            results.append(Result(f"swarm: {action} (POST + wait)", "ms", vmhost, sdk,
                                  f"scale to {replicas} + wait", Target(max_ratio=1.5)))
        results += _port_rows(cluster, api, manager, plan, workspace, service)
    finally:
        _wait(api, api.delete(f"{API}/workspaces/{workspace}"))
        manager.api.remove_service(service)
    return results


def _port_rows(cluster: SwarmCluster, api: Any, manager: docker.DockerClient, plan: Plan, workspace: str,
               service: str) -> list[Result]:
    """A small GET and a large download through the preview, against the same through `nc` exec'd by
    hand on the node (the same files served by the same httpd in both)."""
    big, small = DOWNLOAD_MB * 2**20, 3
    _wait(api, api.post(f"{API}/workspaces/{workspace}/actions/start"))  # the start row's rounds end stopped
    _scale(manager, service, 1)
    started = api.post(f"{API}/workspaces/{workspace}/commands", json={"argv": ["sh", "-c", SERVERS], "stream": True})
    if started.status_code != 200 or '"exit_code": 0' not in started.text:
        raise RuntimeError(f"the servers did not start: {started.text[:300]}")
    task = _running_task(manager, service)
    node_index = next(n.index for n in cluster.nodes if n.node_id == task["NodeID"])
    with closing(cluster.client(node_index)) as node:
        container = task["Status"]["ContainerStatus"]["ContainerID"]
        node.containers.get(container).exec_run(["sh", "-c", SERVERS])
        preview = f"{API}/workspaces/{workspace}/ports/8080/proxy"
        transfer = Plan(min(plan.warmup, 1), min(plan.reps, 5))
        preview_big, relay_big = paired(transfer, http_get(api, f"{preview}/big", big),
                                        _over_exec_relay(node, container, b"GET /big HTTP/1.0\r\n\r\n", big))
        preview_small, relay_small = paired(plan, http_get(api, f"{preview}/small", small),
                                            _over_exec_relay(node, container, b"GET /small HTTP/1.0\r\n\r\n", small))
    relay = "exec nc 127.0.0.1 8080 on the node (docker SDK)"
    return [Result(f"swarm: preview, download {DOWNLOAD_MB} MB", "MB/s", rates(preview_big, DOWNLOAD_MB),
                   rates(relay_big, DOWNLOAD_MB), relay, Target(min_ratio=0.3)),
            Result("swarm: preview, GET a small file", "ms", preview_small, relay_small, relay,
                   Target(max_ratio=2), note="each request reaches the port through a relay of its own: a "
                                             "docker exec on its node, which the baseline pays too")]


def _over_exec_relay(node: docker.DockerClient, container: str, request: bytes, size: int) -> Callable[[int], None]:
    """A request to port 8080 of the container through `nc` run in it by the node's engine, and its answer
    (HTTP/1.0: until the server closes)."""
    def exchange(_: int) -> None:
        exec_id = node.api.exec_create(container, ["nc", "127.0.0.1", "8080"], stdin=True, stdout=True)["Id"]
        connection = node.api.exec_start(exec_id, socket=True)
        try:
            connection._sock.sendall(request)
            received = sum(len(data) for _, data in frames_iter(connection, tty=False))
        finally:
            connection.close()
        if received < size:
            raise RuntimeError(f"received {received} bytes through nc, fewer than {size}")
    return exchange


def _wait(api: Any, answer: Any) -> None:
    if answer.status_code != 202:
        raise RuntimeError(f"answered {answer.status_code}: {answer.text[:300]}")
    body = answer.json()
    operation = body.get("operation", body)
    done = api.get(f"{API}/operations/{operation['id']}/wait", params={"timeout": WAIT}).json()
    if done["status"] != "succeeded":
        raise RuntimeError(f"{done['type']} {done['status']}: {done.get('error')}")


def _create_workspace(api: Any, name: str) -> str:
    answer = api.post(f"{API}/workspaces", json={"name": name, "template": "base", "cpus": CPUS,
                                                 "memory_mb": MEMORY_MB})
    _wait(api, answer)
    return str(answer.json()["workspace"]["id"])


def _create_service(bench: Bench, manager: docker.DockerClient, name: str) -> str:
    """What vmhost makes for a workspace on Swarm, by hand: a one-replica service with init, a volume at
    /workspace, labels and reservations, then waiting for its task to run."""
    labels = {**bench.labels, "bench.workspace": name}
    service = manager.services.create(
        bench.image, COMMAND, name=name, labels=labels, container_labels=labels, init=True,
        mounts=[Mount(target="/workspace", source=f"{name}-workspace", type="volume")], workdir="/workspace",
        resources=Resources(cpu_reservation=int(CPUS * 1e9), mem_reservation=MEMORY_MB * 2**20,
                            cpu_limit=int(CPUS * 1e9), mem_limit=MEMORY_MB * 2**20),
        restart_policy=RestartPolicy(condition="none"), mode=ServiceMode("replicated", replicas=1),
        networks=[NETWORK])
    _running_task(manager, str(service.id))
    return str(service.id)


def _running_task(manager: docker.DockerClient, service: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        for task in manager.api.tasks(filters={"service": service, "desired-state": "running"}):
            if task["Status"]["State"] == "running":
                return dict(task)
        if time.monotonic() > deadline:
            raise RuntimeError(f"service {service} has no running task after {WAIT} s")
        time.sleep(POLL)


def _scale(manager: docker.DockerClient, service_id: str, replicas: int) -> None:
    service = manager.services.get(service_id)
    if replicas:  # with restart condition none, only a forced update makes a new task
        service.update(mode=ServiceMode("replicated", replicas=1), force_update=True)
        _running_task(manager, service_id)
        return
    service.update(mode=ServiceMode("replicated", replicas=0))
    deadline = time.monotonic() + WAIT
    while any(t["Status"]["State"] in ("assigned", "accepted", "preparing", "starting", "running")
              for t in manager.api.tasks(filters={"service": service_id})):
        if time.monotonic() > deadline:
            raise RuntimeError(f"service {service_id} still runs a task after {WAIT} s")
        time.sleep(POLL)
