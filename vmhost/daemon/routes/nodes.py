"""The hosts workspaces run on (admins): Swarm's nodes, or the one Docker engine."""

from __future__ import annotations

from fastapi import APIRouter

from vmhost.core import paging
from vmhost.daemon.deps import CallerDep, OrchestratorDep
from vmhost.daemon.routes.common import API, CursorQuery, LimitQuery, errors
from vmhost.daemon.schemas import NodeEngineIn, NodeOut, Page

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


@router.put(f"{API}/nodes/{{node}}/engine", response_model=NodeOut, summary="Name a node's own engine",
            responses=errors(403, 404, 502, 503))
def set_node_engine(node: str, body: NodeEngineIn, caller: CallerDep, orchestrator: OrchestratorDep) -> NodeOut:
    """Admins only. Sets the node's `vmhost.engine` label: the URL vmhost reaches the node's engine at, for
    what Swarm does not do across nodes (commands, shells, files, logs, commits, volumes). `node` is an id,
    a unique prefix of one, or a hostname."""
    return NodeOut.of(orchestrator.nodes.set_engine(caller, node, body.url))
