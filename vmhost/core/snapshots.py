"""Snapshots of a workspace: its container's filesystem, committed to a labelled image, and its
/workspace volume, kept as a tar file in a `snapshots` directory next to the database. Restoring
brings both back, in place or as a new workspace.

A snapshot image can outlive its snapshot while a container still runs from it (a workspace made
from it, or restored in place from it): Docker refuses to remove an image in use, so it stays and a
later sweep removes it once no workspace runs from it any more.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

from vmhost.core import validation
from vmhost.core.activity import Activity
from vmhost.core.engines import WORKSPACE_LABEL, Engine
from vmhost.core.lifecycle import Lifecycle, volume_name, volume_of
from vmhost.core.models import (
    Caller,
    Operation,
    OperationStatus,
    OperationType,
    Snapshot,
    SnapshotStatus,
    Workspace,
    WorkspaceStatus,
    new_id,
    utcnow,
)
from vmhost.core.operations import OperationQueue, new_operation, workspace_id_of
from vmhost.core.paging import DEFAULT_LIMIT, Page
from vmhost.core.quotas import Quotas
from vmhost.core.store import Store
from vmhost.errors import InvalidState, OperationInFlight, ProviderError, SnapshotNotFound
from vmhost.paths import make_private_dir, private_file

SNAPSHOT_REPOSITORY = "vmhost-snapshot"
SNAPSHOT_LABEL = "vmhost.snapshot"
VOLUME_PATH = "/workspace"


class Snapshots:
    """`find(caller, ref)` is the workspace `ref` names for `caller` (Orchestrator.get). Taking and
    restoring a snapshot count as activity on the workspace (`activity`)."""

    def __init__(self, store: Store, engine: Engine, queue: OperationQueue, lifecycle: Lifecycle, quotas: Quotas,
                 find: Callable[[Caller, str], Workspace], activity: Activity | None = None,
                 directory: Path | None = None) -> None:
        self.activity = activity
        self.store = store
        self.engine = engine
        self.queue = queue
        self.lifecycle = lifecycle
        self.quotas = quotas
        self.find = find
        self._directory = directory

    @property
    def directory(self) -> Path:
        """Where volume archives are kept: beside the database (a temporary one for an in-memory store)."""
        if self._directory is None:
            if str(self.store.path) == ":memory:":
                self._directory = Path(tempfile.mkdtemp(prefix="vmhost-snapshots-"))
            else:
                self._directory = self.store.path.parent / "snapshots"
        return self._directory

    # -- reads ----------------------------------------------------------------------------------

    def list(self, caller: Caller, ref: str, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page[Snapshot]:
        return self.store.page_snapshots(self.find(caller, ref).id, limit=limit, cursor=cursor)

    def get(self, caller: Caller, ref: str, snapshot_ref: str) -> Snapshot:
        return self._find(self.find(caller, ref), snapshot_ref)

    def _find(self, workspace: Workspace, snapshot_ref: str) -> Snapshot:
        snapshot = self.store.find_snapshot(workspace.id, snapshot_ref)
        if snapshot is None:
            raise SnapshotNotFound(f"workspace {workspace.name!r} has no snapshot {snapshot_ref!r}")
        return snapshot

    # -- requests -------------------------------------------------------------------------------

    def create(self, caller: Caller, ref: str, name: str) -> tuple[Snapshot, Operation]:
        """Queue a snapshot of the workspace's filesystem and /workspace volume."""
        caller.require_write()
        validation.check_name(name, "snapshot name")
        workspace = self.find(caller, ref)
        if not workspace.container_id:
            raise InvalidState(f"workspace {workspace.name!r} has no container yet (status {workspace.status})")
        self.engine.ping()
        snapshot_id = new_id("snap")
        # admins have no quota: a snapshot they take is not held to its owner's disk budget
        operation = new_operation(caller, workspace, OperationType.SNAPSHOT,
                                  {"snapshot_id": snapshot_id, "snapshot": name,
                                   "within_quota": not caller.exempt_from_quotas})
        snapshot = Snapshot(id=snapshot_id, workspace_id=workspace.id, name=name, owner=workspace.owner,
                            status=SnapshotStatus.CREATING, image=f"{SNAPSHOT_REPOSITORY}:{snapshot_id}",
                            archive=str(self.directory / workspace.id / f"{snapshot_id}.tar"),
                            created_at=utcnow(), operation_id=operation.id)
        self.store.insert_snapshot(snapshot, operation, check=lambda conn, existing:
                                   self.quotas.check_snapshot(caller, workspace, existing, conn))
        self.queue.submit(operation.id)
        self._touch(workspace.id)
        return snapshot, operation

    def _touch(self, workspace_id: str) -> None:
        if self.activity is not None:
            self.activity.touch(workspace_id)

    def restore(self, caller: Caller, ref: str, snapshot_ref: str,
                as_new: str | None = None) -> tuple[Workspace, Operation]:
        """Queue a restore: in place, or (`as_new`) into a new workspace of the caller's with the same settings."""
        caller.require_write()
        workspace = self.find(caller, ref)
        snapshot = self._find(workspace, snapshot_ref)
        if snapshot.status != SnapshotStatus.READY:
            raise InvalidState(f"snapshot {snapshot.name!r} is not ready yet; "
                               f"wait for operation {snapshot.operation_id}")
        params: dict[str, Any] = {"snapshot_id": snapshot.id, "snapshot": snapshot.name}
        if as_new is None:
            self.engine.ping()  # with Docker away, answer 503 now rather than queue work bound to fail
            operation = new_operation(caller, workspace, OperationType.RESTORE, params)
            self.queue.add(operation)
            self._touch(workspace.id)
            return workspace, operation
        validation.check_name(as_new)
        self.engine.ping()
        now = utcnow()
        ttl = self.quotas.ttl_for(caller, workspace.ttl_seconds)
        copy = dataclasses.replace(
            workspace, id=new_id("ws"), name=as_new, owner=caller.user, image=snapshot.image,
            status=WorkspaceStatus.PENDING, status_reason=None, container_id=None, created_at=now, updated_at=now,
            ttl_seconds=ttl, expires_at=now + timedelta(seconds=ttl) if ttl else None,
            ports={port: "" for port in workspace.ports}, current_operation_id=None,
            idle_timeout_seconds=self.quotas.idle_timeout_for(caller, workspace.idle_timeout_seconds, cap=True),
            last_activity_at=now)
        copy.volume = volume_name(copy.id)
        operation = new_operation(caller, copy, OperationType.RESTORE, {**params, "source_workspace_id": workspace.id})
        self.store.insert_workspace(copy, operation, check=self.quotas.create_check(caller, copy))
        self.queue.submit(operation.id)
        return copy, operation

    def delete(self, caller: Caller, ref: str, snapshot_ref: str) -> Snapshot:
        caller.require_write()
        snapshot = self._find(self.find(caller, ref), snapshot_ref)
        for operation in self.store.operations_with_status(OperationStatus.PENDING, OperationStatus.RUNNING):
            if operation.params.get("snapshot_id") == snapshot.id:
                raise OperationInFlight(f"snapshot {snapshot.name!r} is in use by {operation.type} operation "
                                        f"{operation.id}; wait for it first", operation_id=operation.id)
        self._discard(snapshot)
        self._sweep()
        return snapshot

    # -- operations -----------------------------------------------------------------------------

    def run_snapshot(self, operation: Operation) -> dict[str, Any]:
        snapshot = self.store.get_snapshot(operation.params["snapshot_id"])
        if snapshot is None:
            raise InvalidState("the snapshot was deleted before it was taken")
        workspace, container_id = self.lifecycle.with_container(operation)
        quotas = self.quotas
        room = quotas.snapshot_room(workspace.owner) if operation.params.get("within_quota") else None
        archive = Path(snapshot.archive)
        try:
            image = self.engine.commit(container_id, SNAPSHOT_REPOSITORY, snapshot.id,
                                         {**self.lifecycle.labels_for(workspace), SNAPSHOT_LABEL: snapshot.id})
            if room is not None and image.added_bytes > room:
                raise quotas.snapshot_too_large(workspace.owner, room)
            make_private_dir(archive.parent)
            chunks, _ = self.engine.get_archive(container_id, VOLUME_PATH)
            partial = archive.with_suffix(".partial")
            private_file(partial)
            with open(partial, "wb") as handle, closing(chunks):
                written = image.added_bytes
                for chunk in chunks:  # stops at the budget, so a huge volume never fills the disk first
                    written += len(chunk)
                    if room is not None and written > room:
                        raise quotas.snapshot_too_large(workspace.owner, room)
                    handle.write(chunk)
            os.replace(partial, archive)
        except BaseException:
            self._discard(snapshot)
            raise
        self.store.update_snapshot(snapshot.id, status=SnapshotStatus.READY, image_bytes=image.added_bytes,
                                   volume_bytes=archive.stat().st_size)
        return {"snapshot_id": snapshot.id, "snapshot": snapshot.name,
                "size_bytes": image.added_bytes + archive.stat().st_size}

    def run_restore(self, operation: Operation) -> dict[str, Any]:
        """A new container from the snapshot's image on a fresh volume filled from its archive."""
        lifecycle = self.lifecycle
        snapshot = self.store.get_snapshot(operation.params["snapshot_id"])
        if snapshot is None or not Path(snapshot.archive).is_file():
            raise InvalidState(f"snapshot {operation.params.get('snapshot')!r} was deleted")
        workspace = self.store.get_workspace(workspace_id_of(operation))
        in_place = workspace.id == snapshot.workspace_id
        start = not in_place or bool(workspace.container_id and self.engine.inspect(workspace.container_id).running)
        workspace = self.store.update_workspace(workspace.id, status=WorkspaceStatus.PROVISIONING,
                                                status_reason=f"restoring snapshot {snapshot.name}")
        lifecycle.ensure_image(snapshot.image, operation)
        lifecycle.remove_container(workspace)
        self.engine.remove_volume(volume_of(workspace))
        self.engine.create_volume(volume_of(workspace), lifecycle.labels_for(workspace))
        container_id = lifecycle.create_container(dataclasses.replace(workspace, image=snapshot.image))
        workspace = self.store.update_workspace(workspace.id, image=snapshot.image, container_id=container_id)
        with open(snapshot.archive, "rb") as archive:
            self.engine.put_archive(container_id, "/", archive)
        if start:
            lifecycle.start_container(workspace)
            lifecycle.confirm_running(workspace)
        else:  # an engine whose containers run once made (Swarm's services) stops it again
            self.engine.stop(container_id, lifecycle.stop_timeout)
        lifecycle.sync_status(workspace)
        return {"snapshot_id": snapshot.id, "snapshot": snapshot.name, "container_id": workspace.container_id}

    # -- removal --------------------------------------------------------------------------------

    def purge(self, workspace: Workspace) -> None:
        """Remove a workspace's snapshots (records, archives, images) once its container is gone."""
        for snapshot in self.store.list_snapshots(workspace.id):
            self.store.delete_snapshot(snapshot)
        shutil.rmtree(self.directory / workspace.id, ignore_errors=True)
        self._remove_images({**self.lifecycle.instance_labels, WORKSPACE_LABEL: workspace.id})
        self._sweep(leaving=workspace.id)

    def _discard(self, snapshot: Snapshot) -> None:
        try:
            self._remove_images({**self.lifecycle.instance_labels, SNAPSHOT_LABEL: snapshot.id})
        except ProviderError:
            pass  # left for the sweep
        Path(snapshot.archive).unlink(missing_ok=True)
        Path(snapshot.archive).with_suffix(".partial").unlink(missing_ok=True)
        self.store.delete_snapshot(snapshot)

    def _remove_images(self, labels: dict[str, str]) -> None:
        for found in self.engine.list_managed(labels, kinds=("image",)):
            self.engine.remove_image(found.id)

    def _sweep(self, leaving: str | None = None) -> None:
        """Remove snapshot images whose snapshot is gone and that no workspace (but `leaving`) runs from."""
        in_use = self.store.images_in_use(excluding=leaving)
        for found in self.engine.list_managed(self.lifecycle.instance_labels, kinds=("image",)):
            snapshot_id = found.labels.get(SNAPSHOT_LABEL)
            if snapshot_id and found.name not in in_use and self.store.get_snapshot(snapshot_id) is None:
                self.engine.remove_image(found.id)
