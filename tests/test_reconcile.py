"""Reconciliation: what happens to a workspace's container behind vmhost's back shows in the API (on one
engine and on a three-node Swarm, `on_engine`), and Docker objects with this daemon's labels but no workspace
are orphans that doctor lists and fixes."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import docker
import httpx
import pytest
from conftest import Daemon, OnEngine, create_ws, wait_op


def poll(read: Callable[[], Any], until: Callable[[Any], bool], timeout: float = 30) -> Any:
    """Read until the value satisfies `until`, for at most `timeout` seconds; return the last value."""
    deadline = time.monotonic() + timeout
    value = read()
    while not until(value) and time.monotonic() < deadline:
        time.sleep(0.2)
        value = read()
    return value


def workspace_of(client: httpx.Client, name: str) -> Callable[[], dict[str, Any]]:
    return lambda: client.get(f"/api/v1/workspaces/{name}").json()


def status_events(daemon: Daemon, workspace_id: str) -> list[tuple[str, str]]:
    """(status, previous) of the workspace.status events the daemon recorded, read from its database."""
    with sqlite3.connect(f"file:{daemon.db_path}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT payload FROM events WHERE type = 'workspace.status' AND workspace_id = ? "
                            "ORDER BY id", (workspace_id,)).fetchall()
    return [(json.loads(p)["status"], json.loads(p)["previous"]) for (p,) in rows]


@pytest.fixture
def events_only(on_engine: OnEngine) -> Daemon:
    """A daemon whose periodic sweep never runs during a test: only Docker's events can tell it (on Swarm,
    those of each node's engine)."""
    return on_engine.make_daemon({"VMHOST_RECONCILE_INTERVAL": "3600"})


def remove_behind(on_engine: OnEngine, workspace: dict[str, Any]) -> None:
    """Remove what holds the workspace's container outside vmhost: the container, or on Swarm its service
    (a task's container removed alone is a stopped task)."""
    if on_engine.kind == "docker":
        on_engine.container(workspace).remove(force=True)
    else:
        on_engine.engines[0].api.remove_service(workspace["connection"]["container_id"])


def test_container_stopped_outside_vmhost_shows_stopped_with_an_event(
        on_engine: OnEngine, events_only: Daemon, name: str) -> None:
    with events_only.client() as api:
        workspace = create_ws(api, name)["workspace"]
        container = on_engine.container(workspace)
        container.stop(timeout=1)

        seen = poll(workspace_of(api, name), lambda w: w["status"] != "running")
        assert seen["status"] == "stopped"
        assert "stopped outside vmhost" in seen["status_reason"]
        assert ("stopped", "running") in status_events(events_only, workspace["id"])
        if on_engine.kind == "swarm":  # Swarm does not run a task's container again; vmhost's start does
            assert wait_op(api, api.post(f"/api/v1/workspaces/{name}/start").json()["id"])["status"] == "succeeded"
            assert on_engine.sh(workspace, "echo back") == "back\n"
            return

        # started again behind vmhost's back: running again
        container.start()
        seen = poll(workspace_of(api, name), lambda w: w["status"] != "stopped")
        assert seen["status"] == "running"
        assert seen["status_reason"] is None


def test_container_killed_outside_vmhost_shows_stopped(on_engine: OnEngine, events_only: Daemon, name: str) -> None:
    with events_only.client() as api:
        workspace = create_ws(api, name)["workspace"]
        on_engine.container(workspace).kill()
        seen = poll(workspace_of(api, name), lambda w: w["status"] != "running")
        assert seen["status"] == "stopped"
        assert "exited" in seen["status_reason"]


def test_container_removed_outside_vmhost_shows_error_and_can_still_be_deleted(
        on_engine: OnEngine, events_only: Daemon, name: str) -> None:
    with events_only.client() as api:
        workspace = create_ws(api, name)["workspace"]
        remove_behind(on_engine, workspace)
        seen = poll(workspace_of(api, name), lambda w: w["status"] == "error")  # it may show stopped first
        assert seen["status"] == "error"
        assert seen["status_reason"] == "container removed outside vmhost"
        assert status_events(events_only, workspace["id"])[-1][0] == "error"  # force-removal may die first

        operation = wait_op(api, api.delete(f"/api/v1/workspaces/{name}").json()["id"])
        assert operation["status"] == "succeeded", operation
        assert api.get(f"/api/v1/workspaces/{name}").status_code == 404


def test_vmhost_own_stop_and_start_are_not_fought(events_only: Daemon, name: str) -> None:
    with events_only.client() as api:
        create_ws(api, name)
        for action, status in (("stop", "stopped"), ("start", "running"), ("restart", "running")):
            operation = wait_op(api, api.post(f"/api/v1/workspaces/{name}/actions/{action}").json()["id"])
            assert operation["status"] == "succeeded", operation
            time.sleep(0.5)  # let the engine's events for it arrive
            workspace = api.get(f"/api/v1/workspaces/{name}").json()
            assert (workspace["status"], workspace["status_reason"]) == (status, None)


def test_sweep_catches_up_on_what_happened_while_the_daemon_was_down(on_engine: OnEngine, name: str) -> None:
    daemon = on_engine.make_daemon({"VMHOST_RECONCILE_INTERVAL": "3600"})
    with daemon.client() as api:
        workspace = create_ws(api, name)["workspace"]
    daemon.stop()
    remove_behind(on_engine, workspace)
    daemon.start()
    with daemon.client() as api:
        seen = poll(workspace_of(api, name), lambda w: w["status"] != "running")
    assert (seen["status"], seen["status_reason"]) == ("error", "container removed outside vmhost")


def test_periodic_sweep_alone_finds_a_stopped_container(orchestrator: Any, docker_client: docker.DockerClient,
                                                        name: str) -> None:
    """The core drives itself without HTTP: a Reconciler over the store and the engine."""
    from vmhost.core.orchestrator import Caller, WorkspaceRequest
    from vmhost.core.reconcile import Reconciler

    store = orchestrator.store
    workspace, operation = orchestrator.create(Caller(user="alice"), WorkspaceRequest(name=name))
    assert store.wait_operation(operation.id, 60).status.value == "succeeded"
    reconciler = Reconciler(store, orchestrator.engine, orchestrator.instance_labels)
    assert reconciler.sweep() == []
    container_id = store.get_workspace(workspace.id).container_id
    docker_client.containers.get(container_id).stop(timeout=1)
    changed = reconciler.sweep()
    assert [(w.id, w.status.value) for w in changed] == [(workspace.id, "stopped")]
    assert reconciler.sweep() == []  # nothing left to correct


def test_workspace_with_operation_in_flight_is_left_to_it(orchestrator: Any, docker_client: docker.DockerClient,
                                                          name: str) -> None:
    from vmhost.core.models import Operation, OperationStatus, utcnow
    from vmhost.core.orchestrator import Caller, WorkspaceRequest
    from vmhost.core.reconcile import Reconciler

    store = orchestrator.store
    workspace, operation = orchestrator.create(Caller(user="alice"), WorkspaceRequest(name=name))
    assert store.wait_operation(operation.id, 60).status.value == "succeeded"
    workspace = store.get_workspace(workspace.id)
    # an operation queued but not run: the workspace is busy
    store.add_operation(Operation(id="op_busy", type="stop", status=OperationStatus.PENDING,
                                  workspace_id=workspace.id, workspace_name=name, owner="alice",
                                  requested_by="alice", created_at=utcnow()))
    docker_client.containers.get(workspace.container_id).remove(force=True)
    reconciler = Reconciler(store, orchestrator.engine, orchestrator.instance_labels)
    assert reconciler.sweep() == []
    assert store.get_workspace(workspace.id).status.value == "running"
    store.finish_operation("op_busy", OperationStatus.FAILED, error="test")
    assert [w.status_reason for w in reconciler.sweep()] == ["container removed outside vmhost"]


def make_orphans(docker_client: docker.DockerClient, daemon: Daemon, test_image: str) -> dict[str, str]:
    """A container, a volume and an image labelled as this daemon's, for a workspace it never had."""
    labels = {"vmhost.managed": "true", "vmhost.instance": daemon.instance, "vmhost.workspace": "ws_gone0000",
              "vmhost.owner": "nobody"}
    volume = docker_client.volumes.create(name=f"vmhost-ws_gone-{daemon.instance}", labels=labels)
    container = docker_client.containers.create(test_image, ["sleep", "infinity"], labels=labels,
                                                name=f"vmhost-ws_gone-{daemon.instance}")
    image = container.commit(repository=f"vmhost-orphan-{daemon.instance}", tag="snap",
                             conf={"Labels": labels})
    return {"container": container.id, "volume": volume.name, "image": image.id}


def test_orphans_are_listed_by_doctor_and_removed_by_doctor_fix(
        make_daemon: Callable[..., Daemon], docker_client: docker.DockerClient, test_image: str,
        templates_dir: Any, tmp_path: Any, name: str) -> None:
    for template in templates_dir.glob("*.toml"):
        (tmp_path / template.name).write_text(template.read_text())
    daemon = make_daemon({"VMHOST_TEMPLATES_DIR": str(tmp_path)})
    with daemon.client() as api:
        kept = create_ws(api, name)["workspace"]
        made = make_orphans(docker_client, daemon, test_image)
        # an image of a gone workspace that another workspace runs from (a restored snapshot) is in use
        in_use = f"vmhost-inuse-{daemon.instance}:v1"
        labels = docker_client.images.get(made["image"]).labels
        docker_client.containers.get(made["container"]).commit(
            repository=in_use.partition(":")[0], tag="v1", conf={"Labels": labels, "Env": ["IN_USE=1"]})
        (tmp_path / "inuse.toml").write_text(f'image = "{in_use}"\n')
        create_ws(api, f"{name}-inuse", template="inuse")

        orphans = api.get("/api/v1/orphans").json()["items"]
        assert {(o["kind"], o["workspace_id"]) for o in orphans} == {
            ("container", "ws_gone0000"), ("volume", "ws_gone0000"), ("image", "ws_gone0000")}

        listed = daemon.cli("doctor")
        assert listed.returncode == 1
        assert "FAIL orphans: 3 Docker object(s) belong to no workspace" in listed.stdout
        assert "vmhost doctor --fix" in listed.stdout

        fixed = daemon.cli("doctor", "--fix", "--json")
        report = json.loads(fixed.stdout)
        assert {o["kind"] for o in report["removed"]} == {"container", "volume", "image"}
        assert [c["ok"] for c in report["checks"] if c["name"] == "orphans"] == [True]

        assert api.get("/api/v1/orphans").json()["items"] == []
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(made["container"])
        with pytest.raises(docker.errors.NotFound):
            docker_client.volumes.get(made["volume"])
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(made["image"])
        # the real workspaces are untouched
        assert docker_client.containers.get(kept["connection"]["container_id"]).status == "running"
        assert docker_client.images.get(in_use)


def test_orphan_endpoints_are_for_admins_only(daemon: Daemon) -> None:
    token = daemon.token("orphan-reader")
    with daemon.tcp(token=token) as client:
        for method in ("GET", "DELETE"):
            response = client.request(method, "/api/v1/orphans")
            assert response.status_code == 403, response.text
            assert response.json()["code"] == "forbidden"


class FakeStream:
    """Events that end when the list runs out (as when dockerd restarts), or wait until closed."""

    def __init__(self, events: list[Any], hold: bool) -> None:
        self.events, self.hold, self.closed = events, hold, threading.Event()

    def __iter__(self) -> Any:
        yield from self.events
        if self.hold:
            self.closed.wait(30)

    def close(self) -> None:
        self.closed.set()


def test_event_follower_reconnects_after_the_engine_goes_away_and_sweeps_each_time() -> None:
    from vmhost.core.engines import ContainerEvent
    from vmhost.core.reconcile import EventFollower
    from vmhost.errors import DockerUnavailable

    event = ContainerEvent("die", "c1", {"vmhost.workspace": "ws_1"})
    last = FakeStream([event], hold=True)
    answers: list[Any] = [FakeStream([event], hold=False), DockerUnavailable("engine restarting"), last]
    calls: list[str] = []

    class FakeReconciler:
        instance_labels: ClassVar[dict[str, str]] = {"vmhost.instance": "x"}

        class engine:
            @staticmethod
            def container_events(labels: dict[str, str]) -> FakeStream:
                answer = answers.pop(0)
                if isinstance(answer, Exception):
                    raise answer
                return answer

        @staticmethod
        def sweep() -> list[Any]:
            calls.append("sweep")
            return []

        @staticmethod
        def on_event(seen: Any) -> None:
            calls.append(f"{seen.action} {seen.labels['vmhost.workspace']}")

    follower = EventFollower(FakeReconciler(), retry_max=0.2)  # type: ignore[arg-type]
    follower.start()
    try:
        poll(lambda: list(calls), lambda c: len(c) >= 4, timeout=15)
    finally:
        follower.stop()
    assert calls == ["sweep", "die ws_1", "sweep", "die ws_1"]
    assert follower.connections == 2
    assert last.closed.is_set()  # stop() ends a stream that was waiting for events
