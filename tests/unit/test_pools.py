"""Warm pools on the fake engine: the refill keeps a template's pool at its size, a create claims a ready
workspace exactly once (also 50 creates racing for 10), runs only its own steps on it and moves it to
its owner's network; creates the pool cannot serve build their own; pool workspaces are no one's; a
daemon that dies during or after a claim loses nothing and claims nothing twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from unit.conftest import ALICE, IMAGE, WAIT, MakeOrchestrator, finish
from vmhost.core.engines.fake import FakeEngine
from vmhost.core.engines.fake_faults import SimulatedCrash
from vmhost.core.models import Caller, Operation, OperationStatus, OperationType, WorkspaceStatus
from vmhost.core.operations import new_operation
from vmhost.core.orchestrator import Orchestrator, WorkspaceRequest
from vmhost.core.pools import POOL_OWNER, pool_key
from vmhost.errors import Forbidden, QuotaExceeded

ADMIN = Caller(user="root", admin=True)
SIZE = 10


@pytest.fixture
def pooled_template(templates: Path) -> Path:
    path = templates / "warm.toml"
    path.write_text(f'image = "{IMAGE}"\npool_size = {SIZE}\nprovision = ["echo from-template"]\n')
    return path


def fill(orchestrator: Orchestrator) -> list[Operation]:
    """One refill, and the creates it queued finished."""
    queued = orchestrator.pools.refill()
    for operation in queued:
        assert finish(orchestrator, operation, ADMIN).status == OperationStatus.SUCCEEDED, operation
    return queued


def ready_ids(orchestrator: Orchestrator) -> set[str]:
    return {e.id for e in orchestrator.store.pool_entries()
            if e.status == WorkspaceStatus.RUNNING and e.current_operation_id is None}


def joined(orchestrator: Orchestrator, workspace_id: str) -> Operation:
    """The workspace's move to its owner's network, once it has ended."""
    operation = orchestrator.store.page_operations(workspace_id=workspace_id, type="join_network", limit=1).items[0]
    return finish(orchestrator, operation, ADMIN)


def pool_of(orchestrator: Orchestrator, template: str = "warm") -> tuple[int, int, int]:
    status = next(p for p in orchestrator.pools.status() if p.template == template)
    return status.size, status.ready, status.filling


def test_the_refill_keeps_the_pool_at_its_size_and_no_one_sees_it(
        make_orchestrator: MakeOrchestrator, pooled_template: Path, engine: FakeEngine) -> None:
    orchestrator = make_orchestrator()
    assert len(fill(orchestrator)) == SIZE
    assert pool_of(orchestrator) == (SIZE, SIZE, 0)
    assert fill(orchestrator) == []  # full: nothing more
    assert orchestrator.list(ADMIN).items == [] and orchestrator.list(ALICE).items == []
    assert orchestrator.store.count_by_status() == {}
    assert orchestrator.quotas.quota("alice").usage.workspaces == 0
    entry = orchestrator.store.pool_entries()[0]
    container = engine.container(f"vmhost-{entry.id}")
    assert (container.status, container.labels["vmhost.workspace"]) == ("running", entry.id)
    assert (entry.owner, entry.pool) == (POOL_OWNER, pool_key(orchestrator.templates.get("warm")))
    with pytest.raises(Forbidden):
        orchestrator.pool_status(ALICE)


def test_a_create_claims_a_ready_workspace_and_runs_only_its_own_steps(
        make_orchestrator: MakeOrchestrator, pooled_template: Path, engine: FakeEngine) -> None:
    orchestrator = make_orchestrator()
    fill(orchestrator)
    ready = ready_ids(orchestrator)
    workspace, operation = orchestrator.create(ALICE, WorkspaceRequest(name="box", template="warm",
                                                                       provision=["echo mine"], labels={"k": "v"}))
    assert workspace.id in ready
    done = finish(orchestrator, operation)
    assert (done.status, done.result.get("pooled")) == (OperationStatus.SUCCEEDED, True), done.error
    mine = orchestrator.get(ALICE, "box")
    assert (mine.status, mine.owner, mine.labels, mine.pool) == (WorkspaceStatus.RUNNING, "alice", {"k": "v"}, None)
    assert mine.sources == {"image": "template", "provision.1": "template", "provision.2": "request"}
    ran = [r.argv for r in engine.executed() if r.container_id == engine.container(f"vmhost-{mine.id}").id]
    assert ran == [("/bin/sh", "-c", "echo from-template"), ("/bin/sh", "-c", "echo mine")]  # the first in the pool
    assert "echo mine" in done.output and "from-template" not in done.output
    assert joined(orchestrator, mine.id).status == OperationStatus.SUCCEEDED
    assert engine.container(f"vmhost-{mine.id}").network == "vmhost-unit-alice"
    assert [w.name for w in orchestrator.list(ALICE).items] == ["box"]
    assert orchestrator.quotas.quota("alice").usage.workspaces == 1

    assert len(fill(orchestrator)) == 1  # the refill replaces the one claimed
    assert pool_of(orchestrator) == (SIZE, SIZE, 0) and workspace.id not in ready_ids(orchestrator)


@pytest.mark.parametrize("request_", [
    WorkspaceRequest(name="box", template="warm", cpus=0.5),
    WorkspaceRequest(name="box", template="warm", memory_mb=256),
    WorkspaceRequest(name="box", template="warm", env={"EXTRA": "1"}),
    WorkspaceRequest(name="box", template="base"),
], ids=["cpus", "memory", "env", "template-without-pool"])
def test_a_create_the_pool_cannot_serve_builds_its_own(
        request_: WorkspaceRequest, make_orchestrator: MakeOrchestrator, pooled_template: Path) -> None:
    orchestrator = make_orchestrator()
    fill(orchestrator)
    ready = ready_ids(orchestrator)
    workspace, operation = orchestrator.create(ALICE, request_)
    assert workspace.id not in ready and "pooled" not in operation.params
    assert finish(orchestrator, operation).status == OperationStatus.SUCCEEDED
    assert ready_ids(orchestrator) == ready


def test_fifty_parallel_creates_claim_each_of_ten_ready_workspaces_once(
        make_orchestrator: MakeOrchestrator, pooled_template: Path) -> None:
    orchestrator = make_orchestrator(workers=8)
    fill(orchestrator)
    ready = ready_ids(orchestrator)
    users = [Caller(user=f"user{n}") for n in range(50)]

    def create(caller: Caller) -> tuple[str, Operation]:
        workspace, operation = orchestrator.create(caller, WorkspaceRequest(name="box", template="warm"))
        return workspace.id, operation

    with ThreadPoolExecutor(50) as threads:
        created = list(threads.map(create, users))
    ids = [workspace_id for workspace_id, _ in created]
    claimed = [workspace_id for workspace_id, operation in created if operation.params.get("pooled")]
    assert len(set(ids)) == 50  # every workspace distinct
    assert sorted(claimed) == sorted(ready)  # each ready one claimed, none twice
    for caller, (workspace_id, operation) in zip(users, created, strict=True):
        assert finish(orchestrator, operation, caller).status == OperationStatus.SUCCEEDED
        assert orchestrator.get(caller, "box").id == workspace_id
    fill(orchestrator)
    assert pool_of(orchestrator) == (SIZE, SIZE, 0)


def test_a_claim_refused_by_the_quota_leaves_the_pool_as_it_was(
        make_orchestrator: MakeOrchestrator, pooled_template: Path) -> None:
    orchestrator = make_orchestrator(quota_max_workspaces=1)
    fill(orchestrator)
    ready = ready_ids(orchestrator)
    finish(orchestrator, orchestrator.create(ALICE, WorkspaceRequest(name="one", template="warm"))[1])
    with pytest.raises(QuotaExceeded):
        orchestrator.create(ALICE, WorkspaceRequest(name="two", template="warm"))
    assert len(ready - ready_ids(orchestrator)) == 1


def test_a_daemon_dying_inside_a_claim_loses_nothing(make_orchestrator: MakeOrchestrator,
                                                      pooled_template: Path) -> None:
    orchestrator = make_orchestrator()
    fill(orchestrator)
    ready = ready_ids(orchestrator)
    template = orchestrator.templates.get("warm")
    stand_in = orchestrator.store.get_workspace(next(iter(ready)))  # any workspace, for the operation's fields
    operation = new_operation(ALICE, stand_in, OperationType.CREATE, {"pooled": True})

    def die(_conn: object) -> None:
        raise SimulatedCrash()

    with pytest.raises(SimulatedCrash):
        orchestrator.store.claim_pooled(pool_key(template), {"owner": "alice", "name": "box"}, operation, check=die)
    assert ready_ids(orchestrator) == ready
    assert orchestrator.store.find_workspace("alice", "box") is None


@pytest.mark.parametrize("step", ["run_command", "move_network"])  # the create's own steps; the network move
def test_a_claim_cut_short_after_it_was_made_completes_after_a_restart(
        step: str, make_orchestrator: MakeOrchestrator, pooled_template: Path, engine: FakeEngine) -> None:
    crashed = make_orchestrator()
    fill(crashed)
    ready = ready_ids(crashed)
    died = engine.crash_at(step)
    workspace, operation = crashed.create(ALICE, WorkspaceRequest(name="box", template="warm",
                                                                  provision=["echo mine"]))
    assert died.wait(WAIT)
    crashed.close()

    restarted = make_orchestrator()
    restarted.recover()
    assert finish(restarted, operation).status == OperationStatus.SUCCEEDED
    assert joined(restarted, workspace.id).status == OperationStatus.SUCCEEDED
    assert restarted.get(ALICE, "box").id == workspace.id and workspace.id in ready
    assert engine.container(f"vmhost-{workspace.id}").network == "vmhost-unit-alice"
    assert ready_ids(restarted) == ready - {workspace.id}  # claimed once, by this create only


def test_a_changed_template_replaces_its_pool(make_orchestrator: MakeOrchestrator, pooled_template: Path) -> None:
    orchestrator = make_orchestrator()
    fill(orchestrator)
    old = ready_ids(orchestrator)
    pooled_template.write_text(f'image = "{IMAGE}"\npool_size = 2\nprovision = ["echo changed"]\n')
    queued = orchestrator.pools.refill()
    assert sorted(o.type for o in queued) == [OperationType.CREATE] * 2 + [OperationType.DELETE] * SIZE
    for operation in queued:
        finish(orchestrator, operation, ADMIN)
    assert pool_of(orchestrator) == (2, 2, 0) and not old & ready_ids(orchestrator)


def test_a_refill_that_read_the_pool_before_a_claim_never_removes_the_claimed_workspace(
        make_orchestrator: MakeOrchestrator, pooled_template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orchestrator = make_orchestrator()
    fill(orchestrator)
    before_the_claim = orchestrator.store.pool_entries()
    workspace, operation = orchestrator.create(ALICE, WorkspaceRequest(name="box", template="warm"))
    assert finish(orchestrator, operation).status == OperationStatus.SUCCEEDED
    pooled_template.write_text(f'image = "{IMAGE}"\npool_size = 1\nprovision = ["echo from-template"]\n')
    monkeypatch.setattr(orchestrator.store, "pool_entries", lambda: before_the_claim)
    removed = orchestrator.pools.refill()  # the oldest (claimed) is among the surplus it read
    assert workspace.id not in {o.workspace_id for o in removed} and len(removed) == SIZE - 2
    for done in removed:
        finish(orchestrator, done, ADMIN)
    assert orchestrator.get(ALICE, "box").status == WorkspaceStatus.RUNNING
