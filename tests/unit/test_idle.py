"""The idle stop on the fake engine, on a clock of the test's own: what counts as activity, when the
janitor warns and stops, what it never does, the grace after a restart, the quota's longest idle
timeout, and how the recorded activity reaches the database."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from unit.conftest import ALICE, WAIT, MakeOrchestrator, create_running, finish
from vmhost.core.audit import AuditLog
from vmhost.core.commands import CommandRequest
from vmhost.core.edits import edit_workspace
from vmhost.core.events import EventBus, EventFilter
from vmhost.core.idle import IDLE, decide, warning_window
from vmhost.core.models import Caller, OperationStatus, OperationType, Workspace, WorkspaceStatus, utcnow
from vmhost.core.operations import new_operation
from vmhost.core.orchestrator import Orchestrator, WorkspaceRequest
from vmhost.core.rows import to_text
from vmhost.core.templates import parse_template
from vmhost.core.terminal import open_shell
from vmhost.errors import InvalidInput, QuotaExceeded

ADMIN = Caller(user="root", admin=True)
TIMEOUT = 60  # the `idle` template's idle timeout; the warning window is then 30 s (half of it)


class Clock:
    """Time as the test says: it starts now (in whole milliseconds, as the database keeps times) and moves
    only when told."""

    def __init__(self) -> None:
        now = utcnow()
        self.now = now.replace(microsecond=now.microsecond // 1000 * 1000)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


MakeIdle = Callable[..., Orchestrator]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_idle(make_orchestrator: MakeOrchestrator, templates: Path, clock: Clock) -> MakeIdle:
    """Orchestrators (daemons, one after another) over one database, going by `clock`, with a template
    `idle` whose workspaces stop after TIMEOUT seconds without activity; `settings` are Settings fields."""
    (templates / "idle.toml").write_text(f'image = "vmhost-unit:latest"\nidle_timeout = "{TIMEOUT}s"\n')
    return functools.partial(make_orchestrator, clock)


@pytest.fixture
def orchestrator(make_idle: MakeIdle) -> Orchestrator:
    return make_idle()


def idle_events(orchestrator: Orchestrator, workspace: Workspace) -> list[dict[str, Any]]:
    return [e.payload for e in orchestrator.store.list_events(workspace_id=workspace.id, types=(IDLE,))]


def stages(orchestrator: Orchestrator, workspace: Workspace) -> list[str]:
    return [payload["stage"] for payload in idle_events(orchestrator, workspace)]


def sweep_after(orchestrator: Orchestrator, clock: Clock, seconds: float) -> list[Any]:
    clock.advance(seconds)
    return orchestrator.stop_idle()


def test_the_decision_warns_within_the_window_and_stops_past_the_timeout() -> None:
    last = utcnow()

    def at(seconds: float) -> datetime:
        return last + timedelta(seconds=seconds)

    assert [decide(last, 3600, 300, at(s)) for s in (0, 3299, 3300, 3599, 3600, 9999)] == \
        [None, None, "warn", "warn", "stop", "stop"]
    # a timeout shorter than twice the warning is warned halfway, not after each use
    assert warning_window(20, 300) == 10
    assert [decide(last, 20, 300, at(s)) for s in (9, 10, 19, 20)] == [None, "warn", "warn", "stop"]


def test_an_idle_workspace_is_warned_then_stopped_by_an_operation_of_its_own(orchestrator: Orchestrator,
                                                                              clock: Clock) -> None:
    workspace = create_running(orchestrator, template="idle")
    assert workspace.idle_timeout_seconds == TIMEOUT
    assert workspace.idle_stop_at == workspace.last_activity_at + timedelta(seconds=TIMEOUT)

    assert sweep_after(orchestrator, clock, 20) == [] and stages(orchestrator, workspace) == []
    assert sweep_after(orchestrator, clock, 25) == []  # 45 s idle: inside the 30 s before the stop
    assert stages(orchestrator, workspace) == ["warning"]
    warning = idle_events(orchestrator, workspace)[0]
    assert warning["idle_stop_at"] == to_text(orchestrator.get(ALICE, "box").idle_stop_at)
    assert (warning["idle_timeout_seconds"], warning["action"]) == (TIMEOUT, "stop")
    assert sweep_after(orchestrator, clock, 5) == [] and stages(orchestrator, workspace) == ["warning"]  # once

    [operation] = sweep_after(orchestrator, clock, 30)
    done = finish(orchestrator, operation)
    assert (done.type, done.requested_by, done.status) == (OperationType.IDLE_STOP, "janitor",
                                                          OperationStatus.SUCCEEDED)
    assert done.result["stopped"] is True
    stopped = orchestrator.get(ALICE, "box")
    assert (stopped.status, stopped.idle_stop_at) == (WorkspaceStatus.STOPPED, None)
    assert stages(orchestrator, workspace) == ["warning", "stopped"]
    assert idle_events(orchestrator, workspace)[1]["operation_id"] == operation.id
    [entry] = AuditLog(orchestrator.store).search(ADMIN, workspace=workspace.id).items
    assert (entry.user, entry.method, entry.action, entry.door) == ("janitor", "JANITOR", "idle_stop", "internal")

    # stopped: never idle-stopped again, however long it waits; it is not deleted either
    assert sweep_after(orchestrator, clock, 10 * TIMEOUT) == []
    assert orchestrator.get(ALICE, "box").status == WorkspaceStatus.STOPPED
    # started again (an action: activity), its idle time counts from then
    assert finish(orchestrator, orchestrator.start(ALICE, "box")).status == OperationStatus.SUCCEEDED
    assert sweep_after(orchestrator, clock, 20) == []


def test_commands_every_few_seconds_keep_a_workspace_up(orchestrator: Orchestrator, clock: Clock) -> None:
    workspace = create_running(orchestrator, template="idle")
    for _ in range(20):  # 20 x 25 s: far past the timeout, never 30 s without a command
        clock.advance(25)
        finish(orchestrator, orchestrator.commands.submit(ALICE, "box", CommandRequest(argv=["true"])))
        assert orchestrator.stop_idle() == []
    assert stages(orchestrator, workspace) == []
    assert orchestrator.get(ALICE, "box").status == WorkspaceStatus.RUNNING


@pytest.mark.parametrize("action", ["edit", "file", "snapshot"])
def test_api_actions_count_as_activity(orchestrator: Orchestrator, clock: Clock, action: str) -> None:
    create_running(orchestrator, template="idle")
    clock.advance(TIMEOUT - 5)
    if action == "edit":
        edit_workspace(orchestrator, ALICE, "box", {"labels": {"k": "v"}})
    elif action == "file":
        orchestrator.files.stat(ALICE, "box", "/workspace")
    else:
        _, operation = orchestrator.snapshots.create(ALICE, "box", "snap")
        finish(orchestrator, operation)
    assert sweep_after(orchestrator, clock, 10) == []
    assert orchestrator.get(ALICE, "box").idle_stop_at == clock.now - timedelta(seconds=10 - TIMEOUT)


def test_an_open_shell_command_or_event_stream_counts_for_as_long_as_it_is_open(
        orchestrator: Orchestrator, clock: Clock) -> None:
    workspace = create_running(orchestrator, template="idle")
    shell = open_shell(orchestrator, ALICE, "box")
    assert sweep_after(orchestrator, clock, 5 * TIMEOUT) == [] and stages(orchestrator, workspace) == []
    assert orchestrator.get(ALICE, "box").idle_stop_at == clock.now + timedelta(seconds=TIMEOUT)
    shell.close()
    shell.close()  # twice is once
    assert sweep_after(orchestrator, clock, TIMEOUT // 2 - 5) == []  # counted from the shell's end

    stream = orchestrator.commands.stream(ALICE, "box", CommandRequest(argv=["sleep", "infinity"]))
    _wait_for(lambda: orchestrator.activity.open_sessions(workspace.id) == 1)
    assert sweep_after(orchestrator, clock, 5 * TIMEOUT) == []
    stream.close()
    _wait_for(lambda: orchestrator.activity.open_sessions(workspace.id) == 0)

    async def watch_events() -> None:
        bus = EventBus(orchestrator.store, orchestrator.activity)
        messages = bus.stream(EventFilter(workspace_id=workspace.id), None, heartbeat=0.05)
        await anext(messages)  # the heartbeat after the (empty) replay: the stream is open
        assert await asyncio.to_thread(sweep_after, orchestrator, clock, 5 * TIMEOUT) == []
        await messages.aclose()

    asyncio.run(watch_events())
    assert orchestrator.activity.open_sessions(workspace.id) == 0
    [operation] = sweep_after(orchestrator, clock, TIMEOUT)
    assert finish(orchestrator, operation).result["stopped"] is True
    assert stages(orchestrator, workspace) == ["stopped"]  # the janitor never found it in the warning window


def test_a_workspace_used_after_the_janitor_decided_is_not_stopped(orchestrator: Orchestrator,
                                                                   clock: Clock) -> None:
    workspace = create_running(orchestrator, template="idle")
    clock.advance(2 * TIMEOUT)
    decided = to_text(orchestrator.get(ALICE, "box").last_activity_at)
    operation = new_operation(Caller(user="janitor", admin=True), workspace, OperationType.IDLE_STOP,
                              {"idle_since": decided, "idle_timeout_seconds": TIMEOUT})
    clock.advance(1)
    orchestrator.touch(workspace.id)
    result = orchestrator.idle.run_operation(operation)
    assert result["stopped"] is False and "used again" in result["reason"]
    assert orchestrator.get(ALICE, "box").status == WorkspaceStatus.RUNNING


def test_a_workspace_without_an_idle_timeout_or_not_running_is_never_stopped(orchestrator: Orchestrator,
                                                                             clock: Clock) -> None:
    plain = create_running(orchestrator, name="plain")
    assert (plain.idle_timeout_seconds, plain.idle_stop_at) == (None, None)
    create_running(orchestrator, name="stopped", template="idle")
    assert finish(orchestrator, orchestrator.stop(ALICE, "stopped")).status == OperationStatus.SUCCEEDED
    assert sweep_after(orchestrator, clock, 100 * TIMEOUT) == []
    assert {w.name: w.status for w in orchestrator.list(ALICE).items} == \
        {"plain": WorkspaceStatus.RUNNING, "stopped": WorkspaceStatus.STOPPED}


def test_a_restart_gives_every_running_workspace_its_whole_idle_timeout_again(make_idle: MakeIdle,
                                                                              clock: Clock) -> None:
    first = make_idle()
    workspace = create_running(first, template="idle")
    clock.advance(TIMEOUT - 10)
    first.touch(workspace.id)  # used just before the daemon dies, never flushed
    first.queue.close(0)  # a crash: nothing stored on the way out

    clock.advance(5)
    second = make_idle()  # starts 5 s after that last use, which it never heard of
    assert second.store.get_workspace(workspace.id).last_activity_at < clock.now - timedelta(seconds=TIMEOUT - 10)
    assert sweep_after(second, clock, TIMEOUT - 5) == []  # idle for longer than that since the stored activity
    assert second.get(ALICE, "box").idle_stop_at == second.activity.started_at + timedelta(seconds=TIMEOUT)
    [operation] = sweep_after(second, clock, 10)
    assert finish(second, operation).result["stopped"] is True


def test_the_activity_is_flushed_to_the_database_only_ever_later(orchestrator: Orchestrator,
                                                                 clock: Clock) -> None:
    workspace = create_running(orchestrator, template="idle")

    def stored() -> datetime | None:
        return orchestrator.store.get_workspace(workspace.id).last_activity_at

    created = stored()
    clock.advance(10)
    orchestrator.touch(workspace.id)
    assert stored() == created  # no write per touch
    assert orchestrator.activity.flush() == 1
    assert stored() == clock.now
    assert orchestrator.activity.recorded([workspace.id]) == {workspace.id: clock.now}  # kept one flush longer
    assert orchestrator.activity.flush() == 0
    assert orchestrator.activity.recorded([workspace.id]) == {}
    assert orchestrator.get(ALICE, "box").last_activity_at == clock.now  # from the database now

    # another process stored a later time: a flush never moves it back
    later = clock.now + timedelta(seconds=30)
    with orchestrator.store.transaction() as conn:
        conn.execute("UPDATE workspaces SET last_activity_at = ? WHERE id = ?", (to_text(later), workspace.id))
    orchestrator.touch(workspace.id)
    orchestrator.activity.flush()
    assert stored() == later

    # a flush writes an open session as activity now; and close() flushes what is left
    session = orchestrator.activity.session(workspace.id)
    clock.advance(60)
    orchestrator.activity.flush()
    assert stored() == clock.now
    session.release()
    clock.advance(1)
    orchestrator.touch(workspace.id)
    orchestrator.close()
    assert stored() == clock.now


def test_the_template_sets_the_idle_timeout_and_a_workspace_edit_overrides_it(orchestrator: Orchestrator) -> None:
    assert create_running(orchestrator, template="idle").idle_timeout_seconds == TIMEOUT
    edited = edit_workspace(orchestrator, ALICE, "box", {"idle_timeout_seconds": 7200})
    assert (edited.idle_timeout_seconds, edited.idle_stop_at) == (7200, edited.last_activity_at + timedelta(hours=2))
    assert edit_workspace(orchestrator, ALICE, "box", {"idle_timeout_seconds": 0}).idle_timeout_seconds is None
    assert edit_workspace(orchestrator, ALICE, "box", {"idle_timeout_seconds": 30}).idle_timeout_seconds == 30
    assert edit_workspace(orchestrator, ALICE, "box", {"idle_timeout_seconds": None}).idle_timeout_seconds is None
    for bad in (-1, 1.5, True, "2h"):
        with pytest.raises(InvalidInput, match="idle_timeout_seconds"):
            edit_workspace(orchestrator, ALICE, "box", {"idle_timeout_seconds": bad})


@pytest.mark.parametrize(("written", "seconds"), [('"2h"', 7200), ('"1h30m"', 5400), ("90", 90), ("0", None),
                                                  ('"none"', None)])
def test_a_templates_idle_timeout_is_seconds_or_a_duration(written: str, seconds: int | None) -> None:
    import tomllib

    template = parse_template(tomllib.loads(f'image = "x"\nidle_timeout = {written}\n'), "t.toml")
    assert template.idle_timeout_seconds == seconds


@pytest.mark.parametrize("written", ['"soon"', "-5", "true", '"-1h"'])
def test_a_bad_idle_timeout_makes_the_template_broken(written: str) -> None:
    import tomllib

    with pytest.raises(InvalidInput):
        parse_template(tomllib.loads(f'image = "x"\nidle_timeout = {written}\n'), "t.toml")


def test_the_quotas_longest_idle_timeout_caps_templates_and_refuses_longer_requests(make_idle: MakeIdle,
                                                                                  templates: Path) -> None:
    (templates / "long.toml").write_text('image = "vmhost-unit:latest"\nidle_timeout = "8h"\n')
    orchestrator = make_idle(quota_max_idle_timeout_seconds=3600)
    assert create_running(orchestrator, name="plain").idle_timeout_seconds == 3600  # none asked: the longest
    assert create_running(orchestrator, name="long", template="long").idle_timeout_seconds == 3600  # capped
    assert create_running(orchestrator, name="short", template="idle").idle_timeout_seconds == TIMEOUT
    with pytest.raises(QuotaExceeded, match="at most 3600 s"):
        edit_workspace(orchestrator, ALICE, "short", {"idle_timeout_seconds": 7200})
    assert edit_workspace(orchestrator, ALICE, "short", {"idle_timeout_seconds": 0}).idle_timeout_seconds == 3600
    # per user: an override of 0 is no maximum; admins have no quota
    orchestrator.quotas.set(ADMIN, "alice", {"max_idle_timeout_seconds": 0})
    assert orchestrator.quotas.quota("alice").limits.max_idle_timeout_seconds == 0
    assert edit_workspace(orchestrator, ALICE, "short", {"idle_timeout_seconds": None}).idle_timeout_seconds is None
    workspace, _ = orchestrator.create(ADMIN, WorkspaceRequest(name="mine", template="long"))
    assert workspace.idle_timeout_seconds == 8 * 3600


def _wait_for(condition: Callable[[], bool]) -> None:
    import time

    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.01)
