"""The hosts workspaces run on, as the engine reports them (Swarm's nodes, or the one Docker engine), with
how many workspaces each holds; and naming a node's own engine (admins only)."""

from __future__ import annotations

from dataclasses import dataclass

from vmhost.core.engines import Engine, NodeInfo
from vmhost.core.models import Caller
from vmhost.core.store import Store
from vmhost.errors import InvalidInput, NodeNotFound


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

    def set_engine(self, caller: Caller, ref: str, url: str) -> Node:
        """Name the engine vmhost reaches one node's containers and volumes through."""
        caller.require_admin("may name a node's engine")
        caller.require_write("name a node's engine")
        node = self.find(ref)
        self.engine.set_node_engine(node.id, url)
        return Node(self.find(node.id), self.store.count_by_node().get(node.id, 0))
