"""The hosts workspaces run on, as the engine reports them (Swarm's nodes, or the one Docker engine), with
how many workspaces each holds; naming a node's own engine (admins only); and the watch that marks the
workspaces of a node that went down `unreachable`, and brings them back to their real state with it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from vmhost.core.engines import LOCAL_NODE, Engine, NodeInfo
from vmhost.core.models import Caller, Workspace
from vmhost.core.store import Store
from vmhost.errors import InvalidInput, NodeNotFound, NoRoom, VmhostError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Node:
    info: NodeInfo
    workspaces: int


class Nodes:
    def __init__(self, store: Store, engine: Engine) -> None:
        self.store = store
        self.engine = engine

    def list(self, caller: Caller) -> list[Node]:
        caller.require_admin("may list the nodes")
        counts = self.store.count_by_node()
        return sorted((Node(info, counts.get(info.id, 0)) for info in self.engine.nodes()), key=lambda n: n.info.id)

    def find(self, ref: str) -> NodeInfo:
        """A node by its id, a unique prefix of it, or its hostname when only one node has it."""
        if not ref:
            raise InvalidInput("name a node by its id or hostname")
        nodes = self.engine.nodes()
        matches = ([n for n in nodes if n.id == ref] or [n for n in nodes if n.hostname == ref]
                   or [n for n in nodes if n.id.startswith(ref)])
        if not matches:
            raise NodeNotFound(f"no node {ref!r}: `vmhost nodes ls` lists them")
        if len(matches) > 1:
            raise InvalidInput(f"{ref!r} names {len(matches)} nodes: use a node's id")
        return matches[0]

    def check_room(self, cpus: float, memory_mb: int) -> None:
        """NoRoom unless a node that takes workspaces has `cpus` and `memory_mb` free (on a cluster, whose
        nodes say what their workspaces reserve; one Docker engine reserves nothing)."""
        nodes = self.engine.nodes()
        if [n.id for n in nodes] == [LOCAL_NODE]:
            return
        ready = [n for n in nodes if n.state == "ready"]
        free = sorted(((n.cpus - n.cpus_reserved, n.memory_mb - n.memory_mb_reserved) for n in ready),
                      key=lambda f: (f[1], f[0]), reverse=True)
        if any(c >= cpus and m >= memory_mb for c, m in free):
            return
        most = f"the most free: {free[0][0]:g} CPUs, {free[0][1]} MB" if free else "none is ready"
        raise NoRoom(f"no node has {cpus:g} CPUs and {memory_mb} MB free ({len(ready)} nodes ready of {len(nodes)}; "
                     f"{most}): ask for less, or free or add a node")

    def set_engine(self, caller: Caller, ref: str, url: str) -> Node:
        """Name the engine vmhost reaches one node's containers and volumes through."""
        caller.require_admin("may name a node's engine")
        caller.require_write("name a node's engine")
        node = self.find(ref)
        self.engine.set_node_engine(node.id, url)
        return self.get(node.id)

    def get(self, node_id: str) -> Node:
        """One node as the engine shows it now, with its workspace count."""
        return Node(self.find(node_id), self.store.count_by_node().get(node_id, 0))


class NodeWatch:
    """On each `sweep`, the workspaces of every node whose state changed since the last one (all nodes, the
    first time) are matched to what the engine shows (`sync`: Lifecycle.sync_status)."""

    def __init__(self, store: Store, engine: Engine, sync: Callable[[Workspace], object]) -> None:
        self.store = store
        self.engine = engine
        self.sync = sync
        self._states: dict[str, str] = {}

    def sweep(self) -> None:
        states = {node.id: node.state for node in self.engine.nodes()}
        changed = [node for node, state in states.items() if self._states.get(node) != state]
        for node in changed:
            for workspace in self.store.settled_on_node(node):
                try:
                    self.sync(workspace)
                except VmhostError as exc:
                    log.warning("could not look at workspace %s on node %s: %s", workspace.id, node[:12], exc.detail)
                    states.pop(node, None)  # looked at again next time
        self._states = states
