"""A workspace's life through the orchestrator, checked against what the engine then holds."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from unit.conftest import ALICE, IMAGE, WAIT, MakeOrchestrator, create_running, finish, held_for
from vmhost.core.engines.fake import FakeEngine
from vmhost.core.models import OperationStatus, WorkspaceStatus
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.reconcile import EventFollower, Reconciler
from vmhost.errors import InvalidState


def test_create_stop_start_restart_and_delete(orchestrator: Orchestrator, engine: FakeEngine) -> None:
    workspace = create_running(orchestrator, template="provisioned")
    container = engine.container(workspace.container_id)
    assert (container.name, container.status, container.image) == (f"vmhost-{workspace.id}", "running", IMAGE)
    assert container.labels == {"vmhost.managed": "true", "vmhost.instance": "unit", "vmhost.workspace": workspace.id,
                                "vmhost.owner": "alice"}
    assert (container.volume, container.network) == (workspace.volume, "vmhost-unit-alice")
    assert [r.argv for r in engine.executed()] == [("/bin/sh", "-c", "echo provisioned")]

    for action, status, engine_status, starts in (("stop", WorkspaceStatus.STOPPED, "exited", 1),
                                                  ("start", WorkspaceStatus.RUNNING, "running", 2),
                                                  ("restart", WorkspaceStatus.RUNNING, "running", 3)):
        done = finish(orchestrator, getattr(orchestrator, action)(ALICE, "box"))
        assert done.status == OperationStatus.SUCCEEDED, done.error
        assert orchestrator.get(ALICE, "box").status == status
        container = engine.container(workspace.container_id)
        assert (container.status, container.starts) == (engine_status, starts), action

    done = finish(orchestrator, orchestrator.delete(ALICE, "box"))
    assert done.status == OperationStatus.SUCCEEDED, done.error
    assert orchestrator.list(ALICE).items == []
    assert engine.container(workspace.container_id).status == "removed"
    assert held_for(engine, workspace) == set()


def test_rebuild_makes_a_new_container_from_the_templates_current_image_and_keeps_the_files(
        orchestrator: Orchestrator, engine: FakeEngine, templates: Path) -> None:
    workspace = create_running(orchestrator)
    engine.put_archive(workspace.container_id, "/workspace", io.BytesIO(_tar({"notes.txt": b"keep me"})))
    (templates / "base.toml").write_text('image = "vmhost-unit:v2"\n')
    engine.add_image("vmhost-unit:v2")

    done = finish(orchestrator, orchestrator.rebuild(ALICE, "box"))
    assert done.status == OperationStatus.SUCCEEDED, done.error
    rebuilt = orchestrator.get(ALICE, "box")
    assert (rebuilt.status, rebuilt.image) == (WorkspaceStatus.RUNNING, "vmhost-unit:v2")
    assert rebuilt.container_id != workspace.container_id
    assert engine.container(workspace.container_id).status == "removed"
    assert engine.container(rebuilt.container_id).status == "running"
    chunks, stat = engine.get_archive(rebuilt.container_id, "/workspace/notes.txt")
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive:
        member = archive.extractfile("notes.txt")
        assert member is not None and member.read() == b"keep me"
    assert (stat.kind, stat.size) == ("file", 7)


def test_a_container_that_dies_outside_vmhost_shows_as_stopped(make_orchestrator: MakeOrchestrator,
                                                               engine: FakeEngine) -> None:
    orchestrator = make_orchestrator()
    workspace = create_running(orchestrator)
    follower = EventFollower(Reconciler(orchestrator.store, engine, orchestrator.instance_labels))
    follower.start()
    try:
        engine.die(workspace.container_id)
        store = orchestrator.store
        with store.changed:
            assert store.changed.wait_for(
                lambda: store.get_workspace(workspace.id).status == WorkspaceStatus.STOPPED, WAIT)
    finally:
        follower.stop()
    assert orchestrator.get(ALICE, "box").status_reason == "stopped outside vmhost (Docker says exited)"


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()



def test_the_reconciler_takes_a_workspace_on_a_node_that_is_down_for_unreachable_not_stopped(
        orchestrator: Orchestrator, engine: FakeEngine) -> None:
    """A node's events end when it dies, and the sweep after reconnecting finds it down before NodeWatch."""
    workspace = create_running(orchestrator, "up")
    engine.set_node_state("down")
    changed = Reconciler(orchestrator.store, engine, orchestrator.instance_labels).sweep()
    assert [(w.id, w.status, w.status_reason) for w in changed] == [
        (workspace.id, WorkspaceStatus.UNREACHABLE, "its node fake is down")]


def test_the_workspaces_of_a_node_that_goes_down_are_unreachable_until_it_is_back(
        orchestrator: Orchestrator, engine: FakeEngine) -> None:
    running = create_running(orchestrator, "up")
    stopped = create_running(orchestrator, "down")
    finish(orchestrator, orchestrator.stop(ALICE, "down"))
    orchestrator.node_watch.sweep()
    engine.set_node_state("down")
    orchestrator.node_watch.sweep()
    for workspace in (running, stopped):
        seen = orchestrator.get(ALICE, workspace.id)
        assert (seen.status, seen.status_reason) == (WorkspaceStatus.UNREACHABLE, "its node fake is down")
    with pytest.raises(InvalidState, match="'up' is unreachable: its node fake is down; wait for the node"):
        orchestrator.start(ALICE, "up")
    with pytest.raises(InvalidState, match="unreachable"):
        orchestrator.get(ALICE, "up").running_container()
    events = [e for e in orchestrator.store.list_events(0) if e.type == "workspace.status"]
    assert events[-1].payload["status"] == "unreachable" and events[-1].payload["reason"] == "its node fake is down"

    engine.set_node_state("ready")
    orchestrator.node_watch.sweep()
    assert orchestrator.get(ALICE, "up").status == WorkspaceStatus.RUNNING
    assert orchestrator.get(ALICE, "down").status == WorkspaceStatus.STOPPED
