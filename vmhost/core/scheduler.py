"""The scheduler: starts and stops workspaces at their `autostart` and `autostop` times (see
vmhost.core.schedules for how they are written and when they are due), with operations of their own types
(`autostart`, `autostop`) requested by the system user "vmhost".

Each schedule keeps the due time it last acted on (`autostart_fired_at`, `autostop_fired_at`; setting a
schedule sets it to that moment, so a time already past today does not act). A sweep acts on the latest
due time after it: after a daemon was down, a missed start or stop is made up once, however many were
missed. When both a start and a stop are due, the later one says how the workspace should be and is the
only one acted on. A workspace already as the schedule wants it is left alone (the due time is still
recorded); one busy with another operation is judged again at the next sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from vmhost.core import schedules
from vmhost.core.lifecycle import Lifecycle
from vmhost.core.models import SYSTEM, Operation, OperationType, Workspace, WorkspaceStatus
from vmhost.core.operations import OperationQueue, new_operation, workspace_id_of
from vmhost.core.rows import to_text
from vmhost.core.store import Store
from vmhost.errors import InvalidInput, VmhostError

log = logging.getLogger(__name__)

SCHEDULE_INTERVAL = 30.0  # seconds between sweeps at most: a schedule acts within this of its time
WANTED = {"autostart": WorkspaceStatus.RUNNING, "autostop": WorkspaceStatus.STOPPED}
ACTIONS = {"autostart": OperationType.AUTOSTART, "autostop": OperationType.AUTOSTOP}


def schedule_changes(workspace: Workspace, autostart: Any = ..., autostop: Any = ..., *,
                     now: datetime) -> dict[str, Any]:
    """The workspace fields that set (a text), clear (None or "") or keep (left out) its autostart and
    autostop; InvalidInput says what is wrong with a text. An autostop without a zone takes the
    autostart's (the new one when both are given)."""
    changes: dict[str, Any] = {}
    start = schedules.parse(workspace.autostart) if workspace.autostart else None
    if autostart is not ...:
        start = _parse_field("autostart", autostart)
        changes.update(autostart=str(start) if start else None, autostart_fired_at=now if start else None)
    if autostop is not ...:
        stop = _parse_field("autostop", autostop)
        stop = schedules.resolve_stop(stop, start) if stop else None
        changes.update(autostop=str(stop) if stop else None, autostop_fired_at=now if stop else None)
    return changes


def _parse_field(field: str, value: Any) -> schedules.Schedule | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InvalidInput(f'{field} must be a text such as "mon-fri 08:30 Europe/Berlin", or null to clear it')
    try:
        return schedules.parse(value)
    except schedules.ScheduleError as exc:
        raise InvalidInput(f"{field}: {exc}") from exc


def decide(workspace: Workspace, now: datetime) -> tuple[str | None, dict[str, datetime]]:
    """What the scheduler does now about a workspace: which of "autostart" and "autostop" to act on
    (None: neither; the workspace is already as wanted or nothing is due), and the due times to record."""
    due: dict[str, datetime] = {}
    for which, text, handled in (("autostart", workspace.autostart, workspace.autostart_fired_at),
                                 ("autostop", workspace.autostop, workspace.autostop_fired_at)):
        if text:
            missed = schedules.missed(schedules.parse(text), handled, now)
            if missed is not None:
                due[which] = missed
    if not due:
        return None, due
    latest = max(due, key=lambda which: due[which])
    return (None if workspace.status == WANTED[latest] else latest), due


class Scheduler:
    def __init__(self, store: Store, lifecycle: Lifecycle, queue: OperationQueue,
                 clock: Callable[[], datetime]) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.queue = queue
        self.clock = clock

    def sweep(self) -> list[Operation]:
        """Act on every schedule due (see the module's description). Returns the operations queued."""
        now = self.clock()
        started = []
        for workspace in self.store.scheduled_workspaces():
            action, due = decide(workspace, now)
            if not due:
                continue
            operation = None
            if action is not None:
                operation = new_operation(SYSTEM, workspace, ACTIONS[action],
                                          {"due_at": to_text(due[action]), "schedule": getattr(workspace, action)})
            try:
                self.store.fire_schedule(workspace.id, due, operation)
            except VmhostError as exc:  # busy since it was read, or gone: judged again at the next sweep
                log.info("%s of %s deferred: %s", action, workspace.id, exc.detail)
                continue
            if operation is not None:
                self.queue.submit(operation.id)
                log.info("%s of workspace %s (%s), due at %s", operation.type, workspace.name, workspace.id,
                         operation.params["due_at"])
                started.append(operation)
        return started

    def run_operation(self, operation: Operation) -> dict[str, Any]:
        """The `autostart` and `autostop` operations' handler: start or stop the workspace, unless it is
        already as wanted (changed since the sweep decided)."""
        workspace = self.store.get_workspace(workspace_id_of(operation))
        wanted = WANTED[operation.type]
        if workspace.status == wanted:
            return {"changed": False, "reason": f"the workspace was {workspace.status} already"}
        if operation.type == OperationType.AUTOSTART:
            self.lifecycle.run_start(operation)
        else:
            self.lifecycle.run_stop(operation)
        return {"changed": True, "due_at": operation.params.get("due_at")}
