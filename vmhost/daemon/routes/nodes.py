"""The hosts workspaces run on (admins): Swarm's nodes, or the one Docker engine."""

from __future__ import annotations

from fastapi import APIRouter, Response

from vmhost.core import paging
from vmhost.daemon.deps import CallerDep, OrchestratorDep
from vmhost.daemon.routes.common import API, CursorQuery, LimitQuery, errors, locate_operation
from vmhost.daemon.schemas import NodeEngineIn, NodeOut, OperationOut, Page

router = APIRouter(tags=["nodes"])


NODE_ORDER = paging.Order("nodes", {"id": str})


@router.get(f"{API}/nodes", response_model=Page[NodeOut], summary="List the nodes workspaces run on",
            responses=errors(403, 502, 503))
def list_nodes(caller: CallerDep, orchestrator: OrchestratorDep, limit: LimitQuery = paging.DEFAULT_LIMIT,
               cursor: CursorQuery = None) -> Page[NodeOut]:
    """Admins only. On a Swarm cluster its nodes, by id, with their state, capacity, what the running
    workspaces reserve and how many workspaces each holds; on one Docker engine, that engine (id `local`).
    The engine is asked again for each page."""
    page = NODE_ORDER.page_of(orchestrator.nodes.list(caller), limit, cursor, key=lambda n: (n.info.id,))
    return Page[NodeOut].of(page, NodeOut.of)


@router.post(f"{API}/nodes/{{node}}/actions/drain", status_code=202, response_model=OperationOut,
             summary="Move every workspace off a node", responses=errors(403, 404, 502, 503))
def drain_node(node: str, response: Response, caller: CallerDep, orchestrator: OrchestratorDep) -> OperationOut:
    """Admins only. Queues a `drain` operation: the node is paused (no new workspace lands there), each of
    its workspaces moves to a node Swarm chooses with its /workspace and its container's filesystem (a
    stopped one stays stopped), then the node is marked `drain`. A workspace that cannot move (no room,
    or busy) stays, and the node then stays paused (Swarm's drain would stop it); the operation's result
    has the node's `state` and lists `moved` and `stayed` (with why)."""
    operation = orchestrator.drains.drain(caller, node)
    locate_operation(response, operation.id)
    return OperationOut.model_validate(operation)


@router.post(f"{API}/nodes/{{node}}/actions/activate", response_model=NodeOut,
             summary="Let a drained node take workspaces again", responses=errors(403, 404, 502, 503))
def activate_node(node: str, caller: CallerDep, orchestrator: OrchestratorDep) -> NodeOut:
    """Admins only. Undoes a drain: Swarm may place new workspaces on the node again (the ones moved off it
    stay where they are)."""
    return NodeOut.of(orchestrator.drains.activate(caller, node))


@router.put(f"{API}/nodes/{{node}}/engine", response_model=NodeOut, summary="Name a node's own engine",
            responses=errors(403, 404, 502, 503))
def set_node_engine(node: str, body: NodeEngineIn, caller: CallerDep, orchestrator: OrchestratorDep) -> NodeOut:
    """Admins only. Sets the node's `vmhost.engine` label: the URL vmhost reaches the node's engine at, for
    what Swarm does not do across nodes (commands, shells, files, logs, commits, volumes). `node` is an id,
    a unique prefix of one, or a hostname."""
    return NodeOut.of(orchestrator.nodes.set_engine(caller, node, body.url))
