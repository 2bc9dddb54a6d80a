"""Changes to a workspace's metadata: its name, expiry, labels, plugins, idle timeout and schedule. None
of them touches Docker (the container's name and labels carry the workspace's id, not its name), so they
apply at once."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from vmhost.core import validation
from vmhost.core.models import Caller, OperationType, Workspace, WorkspaceStatus, utcnow
from vmhost.core.scheduler import schedule_changes
from vmhost.errors import InvalidInput, InvalidState, OperationNotFound

if TYPE_CHECKING:
    from vmhost.core.orchestrator import Orchestrator

EDITABLE = ("name", "ttl_seconds", "labels", "remove_labels", "plugins", "idle_timeout_seconds", "autostart",
            "autostop")


def edit_workspace(orchestrator: Orchestrator, caller: Caller, ref: str, changes: Mapping[str, Any]) -> Workspace:
    """Apply the fields present in `changes` (PATCH semantics: absent means unchanged).

    - name: a new name, unique among the owner's workspaces.
    - ttl_seconds: expire that many seconds from now; None removes the expiry (for a user with a quota:
      the longest TTL it allows).
    - labels: set (add or overwrite) these labels; remove_labels: delete these keys (absent ones are ignored).
    - plugins: the new list of plugin ids.
    - idle_timeout_seconds: stop the workspace after this long without activity; None or 0: never (for a
      user whose quota has a longest idle timeout: that one; a longer one is refused).

    An edit is activity on the workspace (it puts its idle stop off).
    """
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise InvalidInput(f"cannot edit {', '.join(unknown)}; editable fields: {', '.join(EDITABLE)}")
    workspace = _editable(orchestrator, caller, ref)
    update: dict[str, Any] = {}
    if "name" in changes:
        update["name"] = validation.check_name(changes["name"])
    if "ttl_seconds" in changes:
        ttl = orchestrator.quotas.ttl_for(caller, validation.check_ttl(changes["ttl_seconds"]))
        update["ttl_seconds"] = ttl
        update["expires_at"] = utcnow() + timedelta(seconds=ttl) if ttl else None
    if "labels" in changes or "remove_labels" in changes:
        update["labels"] = _relabel(workspace.labels, changes.get("labels") or {}, changes.get("remove_labels") or [])
    if "plugins" in changes:
        update["plugins"] = validation.check_plugins(changes["plugins"])
    if "idle_timeout_seconds" in changes:
        update["idle_timeout_seconds"] = orchestrator.quotas.idle_timeout_for(
            caller, validation.check_idle_timeout(changes["idle_timeout_seconds"]))
    update.update(schedule_changes(workspace, changes.get("autostart", ...), changes.get("autostop", ...),
                                   now=orchestrator.activity.clock()))
    orchestrator.touch(workspace.id)
    if not update:
        return _with_activity(orchestrator, workspace)
    return _with_activity(orchestrator, orchestrator.store.update_workspace(workspace.id, **update))


def _with_activity(orchestrator: Orchestrator, workspace: Workspace) -> Workspace:
    return orchestrator.idle.with_activity([workspace])[0]


def extend_workspace(orchestrator: Orchestrator, caller: Caller, ref: str, seconds: Any) -> Workspace:
    """Push the expiry `seconds` further out (from now, when it is already past). Never shortens it: a
    workspace without expiry keeps none."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 < seconds <= validation.MAX_TTL_SECONDS:
        raise InvalidInput(f"seconds must be a whole number from 1 to {validation.MAX_TTL_SECONDS}, got {seconds!r}")
    workspace = _editable(orchestrator, caller, ref)
    orchestrator.touch(workspace.id)
    if workspace.expires_at is None:
        return _with_activity(orchestrator, workspace)
    now = utcnow()
    expires_at = max(workspace.expires_at, now) + timedelta(seconds=seconds)
    if expires_at > now + timedelta(seconds=validation.MAX_TTL_SECONDS):
        raise InvalidInput(f"workspace {workspace.name!r} would then expire more than "
                           f"{validation.MAX_TTL_SECONDS // 86400} days from now; extend it by less")
    orchestrator.quotas.ttl_for(caller, int((expires_at - now).total_seconds()))  # within the longest TTL
    return _with_activity(orchestrator, orchestrator.store.update_workspace(workspace.id, expires_at=expires_at))


def _editable(orchestrator: Orchestrator, caller: Caller, ref: str) -> Workspace:
    """The workspace, unless it is on its way out."""
    caller.require_write()
    workspace = orchestrator.get(caller, ref)
    leaving = workspace.status == WorkspaceStatus.DELETING
    if workspace.current_operation_id and not leaving:
        try:
            current = orchestrator.store.get_operation(workspace.current_operation_id)
            leaving = current.type in (OperationType.DELETE, OperationType.EXPIRE) and not current.status.finished
        except OperationNotFound:
            pass
    if leaving:
        raise InvalidState(f"workspace {workspace.name!r} is being deleted; it can no longer be changed")
    return workspace


def _relabel(labels: dict[str, str], add: Any, remove: Any) -> dict[str, str]:
    add = validation.check_labels(add)
    if not isinstance(remove, list) or not all(isinstance(key, str) for key in remove):
        raise InvalidInput("remove_labels must be a list of label keys")
    both = sorted(set(add) & set(remove))
    if both:
        raise InvalidInput(f"label {both[0]!r} is both set and removed; choose one")
    return validation.check_labels({**{k: v for k, v in labels.items() if k not in remove}, **add})
