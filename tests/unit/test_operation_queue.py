"""The operation queue, through the orchestrator's public methods: each operation runs once however
many sweeps race for it, a restart after a crash at any step finishes or settles what was in flight,
a running create or command can be cancelled, and a failure leaves the workspace as the engine shows it
with nothing left behind."""

from __future__ import annotations

import threading

import pytest

from unit.conftest import ALICE, WAIT, MakeOrchestrator, create_running, finish, held_for
from vmhost.core.commands import CommandRequest
from vmhost.core.engines.fake import FakeEngine
from vmhost.core.models import Caller, OperationStatus, WorkspaceStatus
from vmhost.core.orchestrator import Orchestrator, WorkspaceRequest
from vmhost.errors import DockerUnavailable, ProviderError

ADMIN = Caller(user="root", admin=True)  # no quota: as many workspaces as a test wants
INTERRUPTED = "interrupted by a restart of the vmhost daemon"


def test_each_pending_operation_runs_exactly_once_when_sweeps_race(make_orchestrator: MakeOrchestrator,
                                                                    engine: FakeEngine) -> None:
    stopping = make_orchestrator()
    stopping.close(grace=0)  # takes requests but runs nothing: they stay pending, as after a shutdown
    accepted = [stopping.create(ADMIN, WorkspaceRequest(name=f"ws{n}", template="provisioned")) for n in range(6)]
    assert all(o.status == OperationStatus.PENDING for _, o in accepted)
    daemons = [make_orchestrator(), make_orchestrator()]  # two daemons on one database, four sweeps each
    barrier = threading.Barrier(8)

    def sweep(daemon: Orchestrator) -> None:
        barrier.wait()
        daemon.run_pending()

    sweeps = [threading.Thread(target=sweep, args=(daemons[n % 2],)) for n in range(8)]
    for thread in sweeps:
        thread.start()
    for thread in sweeps:
        thread.join(WAIT)

    for workspace, operation in accepted:
        done = finish(daemons[0], operation, ADMIN)
        assert (done.status, done.attempts) == (OperationStatus.SUCCEEDED, 1), done.error
        assert done.output == "$ echo provisioned\n"
        assert [c.status for c in engine.containers({"vmhost.workspace": workspace.id})] == ["running"]
    assert len(engine.executed()) == len(accepted)


def test_recover_runs_operations_a_stopped_daemon_left_pending(make_orchestrator: MakeOrchestrator) -> None:
    stopping = make_orchestrator()
    stopping.close(grace=0)
    workspace, operation = stopping.create(ALICE, WorkspaceRequest(name="box"))
    restarted = make_orchestrator()
    restarted.recover()
    assert finish(restarted, operation).status == OperationStatus.SUCCEEDED
    assert restarted.get(ALICE, workspace.id).status == WorkspaceStatus.RUNNING


@pytest.mark.parametrize("step", ["ensure_image", "create_volume", "ensure_network", "create_container", "start",
                                  "run_command", "inspect"])
def test_a_create_cut_short_by_a_crash_at_any_step_completes_after_a_restart(
        step: str, make_orchestrator: MakeOrchestrator, engine: FakeEngine) -> None:
    crashed = make_orchestrator()
    died = engine.crash_at(step)
    workspace, operation = crashed.create(ALICE, WorkspaceRequest(name="box", template="provisioned"))
    assert died.wait(WAIT)
    crashed.close()
    assert crashed.get_operation(ALICE, operation.id).status == OperationStatus.RUNNING  # as the crash left it

    restarted = make_orchestrator()
    restarted.recover()
    done = finish(restarted, operation)
    assert (done.status, done.attempts) == (OperationStatus.SUCCEEDED, 2), done.error
    assert restarted.get(ALICE, "box").status == WorkspaceStatus.RUNNING
    assert held_for(engine, workspace) == {f"container vmhost-{workspace.id} (running)",
                                           f"volume {workspace.volume}", "network vmhost-unit-alice"}


def test_a_create_that_crashes_the_daemon_three_times_fails_and_leaves_nothing(
        make_orchestrator: MakeOrchestrator, engine: FakeEngine) -> None:
    first = make_orchestrator()
    died = engine.crash_at("start")
    workspace, operation = first.create(ALICE, WorkspaceRequest(name="box"))
    assert died.wait(WAIT)
    first.close()
    for _ in range(2):  # each restart tries it again, and the daemon dies again
        restarted = make_orchestrator()
        died = engine.crash_at("start")
        restarted.recover()
        assert died.wait(WAIT)
        restarted.close()

    last = make_orchestrator()
    last.recover()
    done = last.get_operation(ALICE, operation.id)
    assert (done.status, done.error, done.attempts) == (OperationStatus.FAILED, f"{INTERRUPTED} (3 attempts)", 3)
    settled = last.get(ALICE, "box")
    assert (settled.status, settled.status_reason) == (WorkspaceStatus.ERROR, f"create {INTERRUPTED} (3 attempts)")
    assert held_for(engine, workspace) == set()


@pytest.mark.parametrize("action, step, status, error, workspace_status", [
    # died before the engine stopped it: the engine shows it running, so the stop did not happen
    ("stop", "stop", OperationStatus.FAILED, f"{INTERRUPTED}; Docker shows the workspace running",
     WorkspaceStatus.RUNNING),
    # died after: the engine shows what the stop did
    ("stop", "inspect", OperationStatus.SUCCEEDED, None, WorkspaceStatus.STOPPED),
    ("restart", "restart", OperationStatus.SUCCEEDED, None, WorkspaceStatus.RUNNING),
    # rebuilds and deletes are done again from the start
    ("rebuild", "start", OperationStatus.SUCCEEDED, None, WorkspaceStatus.RUNNING),
    ("delete", "remove_volume", OperationStatus.SUCCEEDED, None, None),
])
def test_an_action_cut_short_by_a_crash_is_settled_by_the_restart(
        action: str, step: str, status: OperationStatus, error: str | None, workspace_status: WorkspaceStatus | None,
        make_orchestrator: MakeOrchestrator, engine: FakeEngine) -> None:
    crashed = make_orchestrator()
    workspace = create_running(crashed)
    died = engine.crash_at(step)
    operation = getattr(crashed, action)(ALICE, "box")
    assert died.wait(WAIT)
    crashed.close()

    restarted = make_orchestrator()
    restarted.recover()
    done = finish(restarted, operation)
    assert (done.status, done.error) == (status, error)
    if workspace_status is None:
        assert restarted.list(ALICE).items == []
        assert held_for(engine, workspace) == set()
    else:
        assert restarted.get(ALICE, "box").status == workspace_status
        assert [c.status for c in engine.containers({"vmhost.workspace": workspace.id}) if c.status != "removed"] \
            == ["running" if workspace_status == WorkspaceStatus.RUNNING else "exited"]


def test_a_command_cut_short_by_a_crash_fails_and_the_workspace_keeps_running(
        make_orchestrator: MakeOrchestrator, engine: FakeEngine) -> None:
    crashed = make_orchestrator()
    create_running(crashed)
    died = engine.crash_at("run_command")
    operation = crashed.commands.submit(ALICE, "box", CommandRequest(argv=["make", "test"]))
    assert died.wait(WAIT)
    crashed.close()

    restarted = make_orchestrator()
    restarted.recover()
    done = restarted.get_operation(ALICE, operation.id)
    assert (done.status, done.error) == (OperationStatus.FAILED, INTERRUPTED)
    assert restarted.get(ALICE, "box").status == WorkspaceStatus.RUNNING


def test_cancelling_a_running_command_kills_it_and_says_who(orchestrator: Orchestrator, engine: FakeEngine) -> None:
    create_running(orchestrator)
    operation = orchestrator.commands.submit(ALICE, "box", CommandRequest(argv=["sleep", "600"]))
    engine.wait_for(engine.running_commands)

    done = orchestrator.cancel_operation(ALICE, operation.id)
    assert (done.status, done.error) == (OperationStatus.FAILED, "cancelled by alice")
    assert (done.result["exit_code"], done.result["cancelled"]) == (137, True)
    assert engine.running_commands() == []
    assert orchestrator.get(ALICE, "box").status == WorkspaceStatus.RUNNING


def test_a_command_past_its_timeout_is_killed(orchestrator: Orchestrator, engine: FakeEngine) -> None:
    create_running(orchestrator)
    operation = orchestrator.commands.submit(ALICE, "box", CommandRequest(argv=["sleep", "600"], timeout_seconds=0.05))
    done = finish(orchestrator, operation)
    assert done.status == OperationStatus.FAILED
    assert done.error == "the command ran longer than 0.05 s and was killed with all its processes"
    assert (done.result["exit_code"], done.result["timed_out"]) == (137, True)


def test_cancelling_a_create_while_it_provisions_fails_it_and_removes_what_it_made(
        orchestrator: Orchestrator, engine: FakeEngine) -> None:
    engine.on_exec("*npm install*", seconds=600)
    workspace, operation = orchestrator.create(ALICE, WorkspaceRequest(name="box", provision=["npm install"]))
    engine.wait_for(engine.running_commands)

    done = orchestrator.cancel_operation(ALICE, operation.id)
    assert (done.status, done.error) == (OperationStatus.FAILED, "cancelled by alice")
    settled = orchestrator.get(ALICE, "box")
    assert (settled.status, settled.status_reason) == (WorkspaceStatus.ERROR, "create failed: cancelled by alice")
    assert held_for(engine, workspace) == set()


def test_a_create_the_engine_refuses_fails_with_its_reason_and_leaves_nothing(
        orchestrator: Orchestrator, engine: FakeEngine) -> None:
    refusal = "cannot start the container: OCI runtime create failed: no such file"
    engine.fail_next("start", ProviderError(refusal))
    workspace, operation = orchestrator.create(ALICE, WorkspaceRequest(name="box"))

    done = finish(orchestrator, operation)
    assert (done.status, done.error) == (OperationStatus.FAILED, refusal)
    settled = orchestrator.get(ALICE, "box")
    assert (settled.status, settled.status_reason) == (WorkspaceStatus.ERROR, f"create failed: {refusal}")
    assert held_for(engine, workspace) == set()


def test_a_provision_command_that_fails_fails_the_create_with_its_output(
        orchestrator: Orchestrator, engine: FakeEngine) -> None:
    engine.on_exec("*make setup*", exit_code=2, stderr="make: *** No rule to make target 'setup'.\n")
    workspace, operation = orchestrator.create(ALICE, WorkspaceRequest(name="box", provision=["make setup"]))

    done = finish(orchestrator, operation)
    assert done.status == OperationStatus.FAILED
    assert done.error == "provision command 1 (make setup) exited with 2; see the operation's output"
    assert done.output == "$ make setup\nmake: *** No rule to make target 'setup'.\n"
    assert orchestrator.get(ALICE, "box").status == WorkspaceStatus.ERROR
    assert held_for(engine, workspace) == set()


def test_an_engine_lost_mid_create_leaves_a_workspace_that_says_so_and_deletes_once_it_is_back(
        orchestrator: Orchestrator, engine: FakeEngine) -> None:
    starting = engine.hang("start")
    workspace, operation = orchestrator.create(ALICE, WorkspaceRequest(name="box"))
    assert starting.entered.wait(WAIT)
    engine.go_away()
    starting.release()

    done = finish(orchestrator, operation)
    assert done.status == OperationStatus.FAILED
    assert done.error == "Docker engine at fake://engine does not answer (start the container): Connection refused"
    settled = orchestrator.get(ALICE, "box")
    assert settled.status == WorkspaceStatus.ERROR
    assert "its container and volume are still in Docker" in settled.status_reason
    with pytest.raises(DockerUnavailable):  # refused at once while the engine is away
        orchestrator.delete(ALICE, "box")

    engine.come_back()
    assert finish(orchestrator, orchestrator.delete(ALICE, "box")).status == OperationStatus.SUCCEEDED
    assert held_for(engine, workspace) == set()


def test_a_stop_the_engine_refuses_leaves_the_workspace_as_the_engine_shows_it(
        orchestrator: Orchestrator, engine: FakeEngine) -> None:
    create_running(orchestrator)
    engine.fail_next("stop", ProviderError("cannot stop the container: permission denied"))

    done = finish(orchestrator, orchestrator.stop(ALICE, "box"))
    assert (done.status, done.error) == (OperationStatus.FAILED, "cannot stop the container: permission denied")
    settled = orchestrator.get(ALICE, "box")
    assert (settled.status, settled.status_reason) == (
        WorkspaceStatus.RUNNING, "stop failed: cannot stop the container: permission denied")
