"""Schedules: how they are read and written back, when they are due (across daylight-saving changes in
Europe/Berlin), that a missed one is made up once, and the scheduler's decisions on the fake engine, on a
clock of the test's own."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from unit.conftest import ALICE, MakeOrchestrator, create_running, finish
from vmhost.core import schedules
from vmhost.core.edits import edit_workspace
from vmhost.core.models import OperationStatus, OperationType, Workspace, WorkspaceStatus
from vmhost.core.orchestrator import Orchestrator
from vmhost.errors import InvalidInput

BERLIN = "Europe/Berlin"


def at(text: str) -> datetime:
    """An instant written in UTC, e.g. "2026-03-29 06:30"."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- reading and writing ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "written"), [
    ("mon-fri 08:30 Europe/Berlin", "mon-fri 08:30 Europe/Berlin"),
    ("19:00", "19:00"),
    ("MON,Wed 7:05 UTC", "mon,wed 07:05 UTC"),
    ("fri-mon 23:59 Asia/Tokyo", "fri-mon 23:59 Asia/Tokyo"),
    ("mon-sun 06:00", "06:00"),
    ("08:30 America/New_York mon,tue,wed", "mon-wed 08:30 America/New_York"),
])
def test_a_schedule_is_written_back_in_its_shortest_form(text: str, written: str) -> None:
    assert str(schedules.parse(text)) == written
    assert schedules.parse(written) == schedules.parse(text)


@pytest.mark.parametrize(("text", "detail"), [
    ("mnday 08:30", 'unknown day "mnday" in "mnday 08:30": use mon..sun, ranges like mon-fri or lists like mon,wed'),
    ("mon-fri", 'no time of day in "mon-fri": give one as HH:MM'),
    ("24:00", 'bad time "24:00" in "24:00": use HH:MM from 00:00 to 23:59'),
    ("08:30 Europe/Berln", 'unknown time zone "Europe/Berln" in "08:30 Europe/Berln": use an IANA name'),
    ("mon 08:30 tue", 'two lists of days in "mon 08:30 tue"'),
    ("08:30 09:30", 'two times of day in "08:30 09:30"'),
])
def test_a_schedule_that_cannot_be_read_says_what_to_write(text: str, detail: str) -> None:
    with pytest.raises(schedules.ScheduleError) as caught:
        schedules.parse(text)
    assert str(caught.value).startswith(detail)


def test_an_autostop_without_zone_takes_the_autostarts_else_utc() -> None:
    start = schedules.parse("mon-fri 08:30 Europe/Berlin")
    assert str(schedules.resolve_stop(schedules.parse("19:00"), start)) == "19:00 Europe/Berlin"
    assert str(schedules.resolve_stop(schedules.parse("19:00 Asia/Tokyo"), start)) == "19:00 Asia/Tokyo"
    assert str(schedules.resolve_stop(schedules.parse("19:00"), None)) == "19:00 UTC"


# -- due times ----------------------------------------------------------------------------------------


def test_the_wall_clock_time_holds_across_spring_forward() -> None:
    """Berlin moves from UTC+1 to UTC+2 on Sunday 2026-03-29 at 02:00 local time."""
    daily = schedules.parse("08:30 Europe/Berlin")
    assert schedules.next_due(daily, at("2026-03-28 00:00")) == at("2026-03-28 07:30")
    assert schedules.next_due(daily, at("2026-03-28 07:30")) == at("2026-03-29 06:30")  # 08:30 summer time
    assert schedules.last_due(daily, at("2026-03-29 06:29")) == at("2026-03-28 07:30")


def test_a_time_the_clocks_skip_comes_once_at_the_same_offset() -> None:
    skipped = schedules.parse("02:30 Europe/Berlin")  # 02:00 to 03:00 does not exist on 2026-03-29
    assert schedules.next_due(skipped, at("2026-03-28 02:00")) == at("2026-03-29 01:30")  # 03:30 summer time
    assert schedules.next_due(skipped, at("2026-03-29 01:30")) == at("2026-03-30 00:30")


def test_a_time_that_happens_twice_at_fall_back_is_due_once() -> None:
    """Berlin moves from UTC+2 back to UTC+1 on Sunday 2026-10-25: 02:00 to 03:00 local happens twice."""
    repeated = schedules.parse("02:30 Europe/Berlin")
    assert schedules.next_due(repeated, at("2026-10-24 12:00")) == at("2026-10-25 00:30")  # the first 02:30
    assert schedules.next_due(repeated, at("2026-10-25 00:30")) == at("2026-10-26 01:30")  # not 01:30 the same day
    evening = schedules.parse("19:00 Europe/Berlin")
    assert schedules.next_due(evening, at("2026-10-24 18:00")) == at("2026-10-25 18:00")  # 19:00 winter time


def test_only_the_chosen_days_are_due() -> None:
    weekdays = schedules.parse("mon-fri 08:30 Europe/Berlin")
    friday_evening = at("2026-01-09 18:00")  # 2026-01-09 is a Friday
    assert schedules.next_due(weekdays, friday_evening) == at("2026-01-12 07:30")  # Monday
    assert schedules.last_due(weekdays, at("2026-01-11 12:00")) == at("2026-01-09 07:30")  # Sunday: Friday's


def test_a_missed_time_is_made_up_once_however_many_were_missed() -> None:
    daily = schedules.parse("08:30 UTC")
    set_at = at("2026-01-01 12:00")
    assert schedules.missed(daily, set_at, at("2026-01-02 08:29")) is None
    assert schedules.missed(daily, set_at, at("2026-01-05 10:00")) == at("2026-01-05 08:30")  # 4 missed: the last
    assert schedules.missed(daily, at("2026-01-05 08:30"), at("2026-01-05 23:00")) is None  # acted on: done


# -- the scheduler on the fake engine ----------------------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


MakeScheduled = Callable[..., Orchestrator]


@pytest.fixture
def clock() -> Clock:
    return Clock(at("2026-03-27 12:00"))  # a Friday, before Berlin's spring-forward


@pytest.fixture
def make_scheduled(make_orchestrator: MakeOrchestrator, clock: Clock) -> MakeScheduled:
    """Orchestrators (daemons, one after another) over one database, going by `clock`."""
    return functools.partial(make_orchestrator, clock)


def settle(orchestrator: Orchestrator, now: datetime, clock: Clock) -> list[str]:
    """Move the clock to `now`, sweep, wait for what the sweep queued; the types of those operations."""
    clock.now = now
    operations = orchestrator.run_schedules()
    for operation in operations:
        assert finish(orchestrator, operation, ALICE).status == OperationStatus.SUCCEEDED
    return [o.type for o in operations]


def status(orchestrator: Orchestrator, workspace: Workspace) -> WorkspaceStatus:
    return orchestrator.get(ALICE, workspace.id).status


def test_the_scheduler_stops_and_starts_at_the_local_times(make_scheduled: MakeScheduled, clock: Clock) -> None:
    orchestrator = make_scheduled()
    box = create_running(orchestrator)
    edited = edit_workspace(orchestrator, ALICE, box.id, {"autostart": "mon-fri 08:30 Europe/Berlin",
                                                          "autostop": "19:00"})
    assert (edited.autostart, edited.autostop) == ("mon-fri 08:30 Europe/Berlin", "19:00 Europe/Berlin")
    assert settle(orchestrator, at("2026-03-27 17:59"), clock) == []  # 18:59 in Berlin
    assert settle(orchestrator, at("2026-03-27 18:00"), clock) == [OperationType.AUTOSTOP]
    assert status(orchestrator, box) == WorkspaceStatus.STOPPED
    assert settle(orchestrator, at("2026-03-28 07:30"), clock) == []  # Saturday: no start
    assert settle(orchestrator, at("2026-03-30 06:29"), clock) == []  # Monday 08:29, summer time
    assert settle(orchestrator, at("2026-03-30 06:30"), clock) == [OperationType.AUTOSTART]
    assert status(orchestrator, box) == WorkspaceStatus.RUNNING
    assert settle(orchestrator, at("2026-03-30 06:45"), clock) == []  # acted on once
    operation = orchestrator.store.page_operations(workspace_id=box.id, type="autostart", limit=1).items[0]
    assert operation.requested_by == "vmhost" and operation.params["due_at"].startswith("2026-03-30T06:30")


def test_setting_a_schedule_does_not_act_on_a_time_already_past(make_scheduled: MakeScheduled, clock: Clock) -> None:
    orchestrator = make_scheduled()
    box = create_running(orchestrator)
    edit_workspace(orchestrator, ALICE, box.id, {"autostop": "08:00 UTC"})  # past today at 12:00
    assert settle(orchestrator, at("2026-03-27 12:01"), clock) == []
    assert status(orchestrator, box) == WorkspaceStatus.RUNNING
    assert settle(orchestrator, at("2026-03-28 08:00"), clock) == [OperationType.AUTOSTOP]


def test_a_workspace_already_as_wanted_is_left_alone(make_scheduled: MakeScheduled, clock: Clock) -> None:
    orchestrator = make_scheduled()
    box = create_running(orchestrator)
    edit_workspace(orchestrator, ALICE, box.id, {"autostart": "13:00 UTC"})
    assert settle(orchestrator, at("2026-03-27 13:00"), clock) == []  # running already
    assert orchestrator.store.get_workspace(box.id).autostart_fired_at == at("2026-03-27 13:00")


def test_after_a_restart_a_missed_stop_is_made_up_once(make_scheduled: MakeScheduled, clock: Clock) -> None:
    first = make_scheduled()
    box = create_running(first)
    edit_workspace(first, ALICE, box.id, {"autostop": "19:00 UTC"})
    first.close()
    clock.now = at("2026-03-30 10:00")  # down for three evenings
    second = make_scheduled()
    assert settle(second, clock.now, clock) == [OperationType.AUTOSTOP]
    assert status(second, box) == WorkspaceStatus.STOPPED
    finish(second, second.start(ALICE, box.id))
    assert settle(second, at("2026-03-30 12:00"), clock) == []  # made up once, not once per missed evening
    assert status(second, box) == WorkspaceStatus.RUNNING


def test_when_both_were_missed_the_later_one_counts(make_scheduled: MakeScheduled, clock: Clock) -> None:
    orchestrator = make_scheduled()
    box = create_running(orchestrator)
    edit_workspace(orchestrator, ALICE, box.id, {"autostart": "08:00 UTC", "autostop": "18:00"})
    finish(orchestrator, orchestrator.stop(ALICE, box.id))
    assert settle(orchestrator, at("2026-03-28 20:00"), clock) == []  # the stop at 18:00 came after the start
    assert status(orchestrator, box) == WorkspaceStatus.STOPPED
    stored = orchestrator.store.get_workspace(box.id)
    assert (stored.autostart_fired_at, stored.autostop_fired_at) == (at("2026-03-28 08:00"), at("2026-03-28 18:00"))
    assert settle(orchestrator, at("2026-03-29 08:00"), clock) == [OperationType.AUTOSTART]


def test_a_busy_workspace_is_judged_again_at_the_next_sweep(make_scheduled: MakeScheduled, clock: Clock) -> None:
    orchestrator = make_scheduled()
    box = create_running(orchestrator)
    edit_workspace(orchestrator, ALICE, box.id, {"autostop": "13:00 UTC"})
    orchestrator.store.update_workspace(box.id, current_operation_id="op_elsewhere")  # held, as by a create
    assert settle(orchestrator, at("2026-03-27 13:00"), clock) == []
    orchestrator.store.update_workspace(box.id, current_operation_id=None)
    assert settle(orchestrator, at("2026-03-27 13:01"), clock) == [OperationType.AUTOSTOP]


def test_clearing_a_schedule_stops_it(make_scheduled: MakeScheduled, clock: Clock) -> None:
    orchestrator = make_scheduled()
    box = create_running(orchestrator)
    edit_workspace(orchestrator, ALICE, box.id, {"autostop": "13:00 UTC"})
    cleared = edit_workspace(orchestrator, ALICE, box.id, {"autostop": ""})
    assert (cleared.autostop, cleared.next_autostop_at) == (None, None)
    assert settle(orchestrator, at("2026-03-27 13:00"), clock) == []


def test_an_edit_with_a_bad_schedule_is_refused_and_changes_nothing(make_scheduled: MakeScheduled) -> None:
    orchestrator = make_scheduled()
    box = create_running(orchestrator)
    with pytest.raises(InvalidInput) as caught:
        edit_workspace(orchestrator, ALICE, box.id, {"autostart": "mnday 08:30", "name": "other"})
    assert caught.value.detail == ('autostart: unknown day "mnday" in "mnday 08:30": use mon..sun, ranges like '
                                   "mon-fri or lists like mon,wed")
    assert orchestrator.get(ALICE, box.id).name == box.name


def test_the_next_due_times_are_shown(make_scheduled: MakeScheduled) -> None:
    orchestrator = make_scheduled()
    box = create_running(orchestrator)
    edited = edit_workspace(orchestrator, ALICE, box.id, {"autostart": "08:30 Europe/Berlin"})
    assert edited.next_autostart_at is not None
    assert timedelta(0) < edited.next_autostart_at - datetime.now(UTC) <= timedelta(days=1)
