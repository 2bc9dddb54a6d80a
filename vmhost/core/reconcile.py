"""Keep the database honest about Docker: workspaces whose container was stopped, started or removed
outside vmhost, and Docker objects that carry this daemon's labels but belong to no workspace.

Two ways in: Docker's event stream (followed by `EventFollower` on its own thread, reconnecting when
the engine restarts) and a periodic `Reconciler.sweep()`. Neither touches a workspace while one of
vmhost's own operations is in flight on it: that operation syncs the status when it ends.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from vmhost.core.engines import UNREACHABLE, WORKSPACE_LABEL, ContainerEvent, Engine, EventStream, ManagedObject
from vmhost.core.models import Workspace, WorkspaceStatus
from vmhost.core.store import Store
from vmhost.errors import VmhostError, WorkspaceNotFound

log = logging.getLogger(__name__)

REMOVED_OUTSIDE = "container removed outside vmhost"
# Only these statuses describe a container that should exist and be left alone by vmhost; the others
# belong to an operation (pending, provisioning, deleting) or to a failure whose reason must stay.
SETTLED = (WorkspaceStatus.RUNNING, WorkspaceStatus.STOPPED)


@dataclass(frozen=True)
class Orphan:
    kind: str  # container, volume or image
    id: str
    name: str
    workspace_id: str


class Reconciler:
    def __init__(self, store: Store, engine: Engine, instance_labels: dict[str, str]) -> None:
        self.store = store
        self.engine = engine
        self.instance_labels = instance_labels

    def reconcile(self, workspace: Workspace) -> Workspace | None:
        """Make one workspace's status say what Docker shows. Returns it when it changed."""
        if workspace.current_operation_id is not None or workspace.status not in SETTLED:
            return None
        state = self.engine.inspect(workspace.container_id) if workspace.container_id else None
        changes: dict[str, object]
        if state is None or not state.exists:
            changes = {"status": WorkspaceStatus.ERROR, "status_reason": REMOVED_OUTSIDE}
        elif state.status == UNREACHABLE:  # its node is down: NodeWatch brings it back with the node
            changes = {"status": WorkspaceStatus.UNREACHABLE, "status_reason": state.reason}
        elif state.running:
            changes = {"status": WorkspaceStatus.RUNNING, "status_reason": None,
                       "ports": state.ports or workspace.ports}
        else:
            changes = {"status": WorkspaceStatus.STOPPED,
                       "status_reason": f"stopped outside vmhost (Docker says {state.status})"}
        if changes["status"] == workspace.status:
            return None
        with self.store.transaction():
            # Docker was asked outside the lock: give way if anything moved the workspace since.
            try:
                current = self.store.get_workspace(workspace.id)
            except WorkspaceNotFound:
                return None
            if (current.current_operation_id is not None or current.status != workspace.status
                    or current.updated_at != workspace.updated_at):
                return None
            changed = self.store.update_workspace(workspace.id, **changes)
        log.info("workspace %s (%s) is %s: %s", changed.name, changed.id, changed.status.value,
                 changed.status_reason or "started outside vmhost")
        return changed

    def reconcile_id(self, workspace_id: str) -> Workspace | None:
        try:
            return self.reconcile(self.store.get_workspace(workspace_id))
        except WorkspaceNotFound:
            return None

    def sweep(self) -> list[Workspace]:
        """Reconcile every settled workspace; returns those that changed."""
        changed = []
        for status in SETTLED:
            for workspace in self.store.list_workspaces(status=status.value):
                try:
                    result = self.reconcile(workspace)
                except WorkspaceNotFound:
                    continue
                if result is not None:
                    changed.append(result)
        return changed

    def on_event(self, event: ContainerEvent) -> Workspace | None:
        workspace_id = event.labels.get(WORKSPACE_LABEL)
        return self.reconcile_id(workspace_id) if workspace_id else None

    # -- orphans --------------------------------------------------------------------------------

    def orphans(self) -> list[Orphan]:
        """This daemon's Docker objects whose workspace the database does not hold.

        Docker is listed before the database is read: a workspace's row is written before its first
        Docker object and removed after its last, so a workspace being created or deleted is never
        taken for an orphan. Objects without a workspace label are not vmhost's to judge, and an image
        that a workspace runs from (a snapshot restored into another workspace) is in use."""
        objects: list[ManagedObject] = self.engine.list_managed(self.instance_labels)
        workspaces = self.store.list_workspaces()
        known = {w.id for w in workspaces}
        images_in_use = {w.image for w in workspaces}
        return [Orphan(o.kind, o.id, o.name, o.labels[WORKSPACE_LABEL]) for o in objects
                if o.labels.get(WORKSPACE_LABEL) and o.labels[WORKSPACE_LABEL] not in known
                and not (o.kind == "image" and (o.name in images_in_use or o.id in images_in_use))]

    def remove_orphans(self) -> list[Orphan]:
        """Remove every orphan found now (containers first, then images, then volumes)."""
        found = self.orphans()
        order = {"container": 0, "image": 1, "volume": 2}
        for orphan in sorted(found, key=lambda o: order.get(o.kind, 3)):
            if orphan.kind == "container":
                self.engine.remove_container(orphan.id)
            elif orphan.kind == "image":
                self.engine.remove_image(orphan.id)
            elif orphan.kind == "volume":
                self.engine.remove_volume(orphan.name)
            log.info("removed orphan %s %s of workspace %s", orphan.kind, orphan.name, orphan.workspace_id)
        return found


class EventFollower:
    """Follows Docker's container events for this daemon's objects on its own thread. After each
    (re)connection it sweeps once, so what happened while it was not listening is caught up."""

    name = "reconciler-events"

    def __init__(self, reconciler: Reconciler, retry_max: float = 30.0) -> None:
        self.reconciler = reconciler
        self.retry_max = retry_max
        self.connections = 0
        self._stop = threading.Event()
        self._stream: EventStream | None = None
        self._stream_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="vmhost-reconciler-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        with self._stream_lock:
            if self._stream is not None:
                self._stream.close()
        self._thread.join(timeout)

    def _loop(self) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                self._follow()
                delay = 1.0
            except VmhostError as exc:
                log.warning("cannot follow Docker's events (retrying in %.0f s): %s", delay, exc.detail)
            except Exception:
                log.exception("following Docker's events failed (retrying in %.0f s)", delay)
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.retry_max)

    def _follow(self) -> None:
        stream = self.reconciler.engine.container_events(self.reconciler.instance_labels)
        with self._stream_lock:
            if self._stop.is_set():
                stream.close()
                return
            self._stream = stream
        try:
            self.connections += 1
            self.reconciler.sweep()
            for event in stream:
                try:
                    self.reconciler.on_event(event)
                except VmhostError as exc:
                    log.warning("could not reconcile after %s of %s: %s", event.action, event.container_id[:12],
                                exc.detail)
        finally:
            with self._stream_lock:
                self._stream = None
            stream.close()
        if not self._stop.is_set():
            log.warning("Docker's event stream ended; reconnecting")
