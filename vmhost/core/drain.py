"""Draining a node: every workspace on it moves to a node Swarm chooses, carrying /workspace and its
container's filesystem (committed on the old node, the image copied to the new one through vmhost), then
the node is marked `drain` so that nothing lands on it again until it is activated.

While the workspaces move, the node is paused: no new workspace lands there, the ones on it keep running.
A workspace that no other node has room for, or that is busy with an operation, stays where it is; the
drain's result says which and why, and the node stays paused (Swarm's `drain` would stop what stayed).
"""

from __future__ import annotations

import dataclasses
import tempfile
from contextlib import closing
from typing import Any

from vmhost.core.engines import Engine
from vmhost.core.lifecycle import Lifecycle, container_of, volume_of
from vmhost.core.models import (
    Caller,
    Operation,
    OperationStatus,
    OperationType,
    Workspace,
    WorkspaceStatus,
    new_id,
    utcnow,
)
from vmhost.core.nodes import Node, Nodes
from vmhost.core.operations import OperationQueue
from vmhost.core.output import OperationOutput
from vmhost.core.quotas import Quotas
from vmhost.core.snapshots import VOLUME_PATH
from vmhost.core.store import Store
from vmhost.errors import VmhostError

MOVED_REPOSITORY = "vmhost-moved"


class Drains:
    def __init__(self, store: Store, engine: Engine, queue: OperationQueue, lifecycle: Lifecycle, quotas: Quotas,
                 nodes: Nodes) -> None:
        self.store = store
        self.engine = engine
        self.queue = queue
        self.lifecycle = lifecycle
        self.quotas = quotas
        self.nodes = nodes

    def drain(self, caller: Caller, ref: str) -> Operation:
        """Queue the move of every workspace off the node (admins)."""
        caller.require_admin("may drain a node")
        caller.require_write("drain a node")
        node = self.nodes.find(ref)
        self.engine.set_node_availability(node.id, "pause")  # refused at once on one Docker engine
        operation = Operation(id=new_id("op", 8), type=OperationType.DRAIN, status=OperationStatus.PENDING,
                              workspace_id=None, workspace_name=None, owner=caller.user, requested_by=caller.user,
                              created_at=utcnow(), params={"node": node.id, "hostname": node.hostname})
        self.queue.add(operation)
        return operation

    def activate(self, caller: Caller, ref: str) -> Node:
        """Let the node take workspaces again (admins)."""
        caller.require_admin("may activate a node")
        caller.require_write("activate a node")
        node = self.nodes.find(ref)
        self.engine.set_node_availability(node.id, "active")
        return self.nodes.get(node.id)

    def run_drain(self, operation: Operation) -> dict[str, Any]:
        node = operation.params["node"]
        self.engine.set_node_availability(node, "pause")
        moved: list[dict[str, str]] = []
        stayed: list[dict[str, str]] = []
        with OperationOutput(self.store, operation.id) as write:
            for workspace in self.store.workspaces_on_node(node):
                say = lambda text, name=workspace.name: write("stdout", f"{name}: {text}\n".encode())  # noqa: E731
                if not self.store.hold_workspace(workspace.id, operation.id):
                    stayed.append({"name": workspace.name, "why": "busy with another operation"})
                    say("stays: busy with another operation")
                    continue
                try:
                    to = self._move(workspace, say)
                    moved.append({"name": workspace.name, "node": to})
                except VmhostError as exc:
                    stayed.append({"name": workspace.name, "why": exc.detail})
                    say(f"stays: {exc.detail}")
                finally:
                    self.store.release_workspace(workspace.id, operation.id)
        state = "paused" if stayed else "drain"
        self.engine.set_node_availability(node, "pause" if stayed else "drain")
        write("stdout", f"node {operation.params['hostname']} is {state}\n".encode())
        return {"node": node, "state": state, "moved": moved, "stayed": stayed}

    def _move(self, workspace: Workspace, say: Any) -> str:
        """Commit the workspace's container and archive its /workspace, then make it again on another node
        from that image and archive. Answers the node it is on now."""
        limits = self.quotas.container_limits(workspace)
        self.nodes.check_room(limits.cpus, limits.memory_mb)  # the paused node does not count
        container_id = container_of(workspace)
        running = workspace.status == WorkspaceStatus.RUNNING
        if running:
            committed = self.engine.commit(container_id, MOVED_REPOSITORY, workspace.id,
                                           self.lifecycle.labels_for(workspace))
            image = f"{MOVED_REPOSITORY}:{workspace.id}"
            say(f"committed its filesystem ({committed.added_bytes} bytes on top of its image)")
        else:  # on Swarm a stopped workspace has no container: its next start makes one from its image
            image = workspace.image
        with tempfile.TemporaryFile(prefix="vmhost-move-") as archive:
            chunks, _ = self.engine.get_archive(container_id, VOLUME_PATH)
            with closing(chunks):
                for chunk in chunks:
                    archive.write(chunk)
            say(f"archived /workspace ({archive.tell()} bytes)")
            self.engine.ensure_image(image, say)
            self.lifecycle.remove_container(workspace)
            try:
                self.engine.remove_volume(volume_of(workspace))
                container_id = self.lifecycle.create_container(dataclasses.replace(workspace, image=image, node=None))
                workspace = self.store.update_workspace(workspace.id, image=image, container_id=container_id,
                                                        node=None)
                archive.seek(0)
                self.engine.put_archive(container_id, "/", archive)
                if not running:
                    self.engine.stop(container_id, self.lifecycle.stop_timeout)
            except VmhostError as exc:  # half moved: say so on the workspace
                self.lifecycle.sync_status(workspace, reason=f"moving it off its node failed: {exc.detail}")
                raise
        workspace = self.lifecycle.sync_status(workspace)
        say(f"moved to node {workspace.node}")
        return workspace.node or ""
