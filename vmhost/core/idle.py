"""The idle stop: a running workspace that nobody used for its idle timeout is stopped (never deleted) by
the janitor, with an operation of its own type, `idle_stop`, requested by "janitor".

What counts as activity is recorded by vmhost.core.activity. The idle stop counts the latest of: the
activity recorded in memory (now, while a session is open), the `last_activity_at` flushed to the
database, and, for a running workspace, the last change to its row (`updated_at`: the change of status
that made it run, also when it was started outside vmhost; an edit) and the time this daemon started:
a restart never stops a workspace that was in use just before it, even when the daemon died before it
could flush.

Before the stop a `workspace.idle` event goes out with `"stage": "warning"` once the workspace is within
the warning window (`idle_warning` seconds, at most half its idle timeout, before the stop), and one
with `"stage": "stopped"` when the idle stop has stopped it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Literal

from vmhost.core.activity import Activity
from vmhost.core.audit import AuditEntry, AuditLog
from vmhost.core.lifecycle import Lifecycle
from vmhost.core.models import Caller, Door, Operation, OperationType, Workspace, WorkspaceStatus
from vmhost.core.operations import OperationQueue, new_operation, workspace_id_of
from vmhost.core.rows import to_text
from vmhost.core.store import Store
from vmhost.errors import VmhostError

log = logging.getLogger(__name__)

IDLE = "workspace.idle"
JANITOR = Caller(user="janitor", admin=True, door=Door.INTERNAL)

Decision = Literal["stop", "warn"] | None


def idle_since(workspace: Workspace, recorded: datetime | None, started_at: datetime) -> datetime:
    """The last activity the idle stop counts on `workspace`, given what memory `recorded` for it and
    when the daemon started (see the module's description)."""
    times = [t for t in (workspace.last_activity_at, recorded) if t is not None]
    if workspace.status == WorkspaceStatus.RUNNING:  # since when it runs, as it is, under this daemon
        times += [workspace.updated_at, started_at]
    return max(times)


def warning_window(timeout_seconds: float, warning_seconds: float) -> float:
    """How long before its idle stop a workspace is warned: `warning_seconds`, but at most half its idle
    timeout (else a workspace used every few seconds would be warned after each use)."""
    return min(warning_seconds, timeout_seconds / 2)


def decide(last_activity: datetime, timeout_seconds: int, warning_seconds: float, now: datetime) -> Decision:
    """What the janitor does now about a running workspace idle since `last_activity`: stop it, warn
    about it, or nothing."""
    stop_at = last_activity + timedelta(seconds=timeout_seconds)
    if now >= stop_at:
        return "stop"
    if now >= stop_at - timedelta(seconds=warning_window(timeout_seconds, warning_seconds)):
        return "warn"
    return None


class IdleStops:
    def __init__(self, store: Store, activity: Activity, lifecycle: Lifecycle, queue: OperationQueue,
                 warning_seconds: float) -> None:
        self.store = store
        self.activity = activity
        self.lifecycle = lifecycle
        self.queue = queue
        self.warning_seconds = warning_seconds

    def with_activity(self, workspaces: list[Workspace]) -> list[Workspace]:
        """The workspaces with `last_activity_at` set to the last activity the idle stop counts (so that
        `idle_stop_at` says when it comes), in place."""
        recorded = self.activity.recorded(w.id for w in workspaces)
        for workspace in workspaces:
            if workspace.status == WorkspaceStatus.RUNNING or workspace.id in recorded:
                workspace.last_activity_at = idle_since(workspace, recorded.get(workspace.id),
                                                        self.activity.started_at)
        return workspaces

    def sweep(self) -> list[Operation]:
        """The janitor's sweep: warn about the running workspaces close to their idle stop, and queue an
        idle stop for each one past it. Returns the operations queued."""
        now = self.activity.clock()
        candidates = self.store.idle_candidates()
        recorded = self.activity.recorded(w.id for w in candidates)
        started = []
        for workspace in candidates:
            timeout = workspace.idle_timeout_seconds
            if not timeout:
                continue
            last = idle_since(workspace, recorded.get(workspace.id), self.activity.started_at)
            try:
                decision = decide(last, timeout, self.warning_seconds, now)
                if decision == "warn":
                    self._announce(workspace, "warning", last, timeout,
                                   idle_stop_at=to_text(last + timedelta(seconds=timeout)))
                elif decision == "stop":
                    started.append(self._stop(workspace, last, timeout))
            except VmhostError as exc:
                log.info("idle stop skipped %s: %s", workspace.id, exc.detail)
        return started

    def _stop(self, workspace: Workspace, last: datetime, timeout: int) -> Operation:
        operation = new_operation(JANITOR, workspace, OperationType.IDLE_STOP,
                                  {"idle_since": to_text(last), "idle_timeout_seconds": timeout})
        self.queue.add(operation)
        log.info("stopping workspace %s (%s): idle since %s (idle timeout %d s)", workspace.name, workspace.id,
                 to_text(last), timeout)
        try:
            AuditLog(self.store).record(AuditEntry(
                door=Door.INTERNAL.value, method="JANITOR", path=f"/api/v1/operations/{operation.id}", status=202,
                user=JANITOR.user, action=OperationType.IDLE_STOP.value, workspace_id=workspace.id,
                workspace_name=workspace.name))
        except VmhostError as exc:
            log.error("audit entry for idle stop %s not recorded: %s", operation.id, exc.detail)
        return operation

    def _announce(self, workspace: Workspace, stage: str, last: datetime, timeout: int, **more: Any) -> None:
        """A `workspace.idle` event, once per workspace, stage and idle spell (its last activity)."""
        self.store.add_event_once(IDLE, workspace.id, workspace.owner,
                                  {"name": workspace.name, "stage": stage, "last_activity_at": to_text(last),
                                   "idle_timeout_seconds": timeout, "action": "stop", **more})

    def run_operation(self, operation: Operation) -> dict[str, Any]:
        """The `idle_stop` operation's handler: stop the workspace, unless it was used (or stopped) since
        the janitor decided."""
        workspace_id = workspace_id_of(operation)
        recorded = self.activity.recorded([workspace_id]).get(workspace_id)
        workspace = self.store.get_workspace(workspace_id)
        decided = operation.params.get("idle_since") or ""
        timeout = operation.params.get("idle_timeout_seconds") or workspace.idle_timeout_seconds or 0
        if workspace.status != WorkspaceStatus.RUNNING:
            return {"stopped": False, "reason": f"the workspace was {workspace.status} already"}
        last = to_text(idle_since(workspace, recorded, self.activity.started_at)) or ""
        if last > decided:
            return {"stopped": False, "reason": f"the workspace was used again at {last}"}
        self.lifecycle.run_stop(operation)
        self._announce(workspace, "stopped", datetime.fromisoformat(decided) if decided else workspace.updated_at,
                       timeout, operation_id=operation.id)
        return {"stopped": True, "idle_since": decided, "idle_timeout_seconds": timeout}
