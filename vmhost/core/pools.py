"""Warm pools: for a template with `pool_size = N`, the daemon keeps N workspaces of it created, started
and provisioned (the template's own provision commands), each with a fresh volume, owned by no one
(POOL_OWNER, which no user name can be: they count against no quota and no user's list shows them). A
create the pool can serve claims one instead of building a container, then runs only its own steps.

A pool workspace is a row of the workspaces table with `pool` set to its pool's key: the template's name
and a digest of everything the template gives its containers (image, command, environment, ports,
capabilities, resources, provision commands), so a template that changes never serves a workspace made
from its old form (the refill replaces those). Its id, container name, volume and `vmhost.workspace`
label are final from the start, so reconciliation and orphan detection treat it as any workspace.

The claim (Store.claim_pooled) is one UPDATE of the oldest ready row of the pool, checked by the row it
changed, in one transaction with the quota check and the create operation: two creates never get one
workspace, and a daemon that dies during a claim either claimed (the operation carries on at the next
start) or did not (the workspace is still in the pool).

Docker cannot change a container's hostname or labels once made. So a claimed container keeps the
hostname it was given in the pool (`pool-<hex>`) and its `vmhost.owner` label names the pool; the
database is the truth for who owns a workspace and what it is called (the CLI, the API and the quotas all
read it), and a rebuild gives the workspace a container with its own hostname and labels.

The pool's network is isolated (Docker's inter-container traffic off on it): its workspaces, which will
be different owners', never reach each other. A claimed workspace is usable at once on it, alone as far
as the network goes, and moves to its owner's network (Docker can change a running container's networks)
in a `join_network` operation queued beside the create's own steps: Docker takes 100-200 ms for that,
which the create does not wait for. A Swarm cluster cannot move a service's networks: no pools there.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from vmhost.core.lifecycle import Lifecycle, volume_name
from vmhost.core.models import (
    POOL_OWNER,
    SYSTEM,
    Caller,
    Operation,
    OperationType,
    Template,
    Workspace,
    WorkspaceStatus,
    command_list,
    new_id,
    utcnow,
)
from vmhost.core.operations import OperationQueue, new_operation, workspace_id_of
from vmhost.core.quotas import Quotas
from vmhost.core.store import Store
from vmhost.core.templates import TemplateCatalog
from vmhost.errors import VmhostError

log = logging.getLogger(__name__)

POOL_INTERVAL = 2.0  # seconds between refills
FAILED_RETRY = timedelta(seconds=60)  # a pool workspace whose create failed holds its place this long
FILLING = (WorkspaceStatus.PENDING, WorkspaceStatus.PROVISIONING)
# what a claim gives the pool workspace: the request's own fields (the rest is the template's, as in the pool)
CLAIMED_FIELDS = ("name", "owner", "labels", "repo_url", "branch", "ttl_seconds", "expires_at", "provision", "plugins",
                  "idle_timeout_seconds", "last_activity_at", "created_at", "sources")


def pool_key(template: Template) -> str:
    """The key of a template's pool: its name and a digest of what it gives its containers."""
    given = [template.image, list(template.command), template.env, list(template.ports), list(template.capabilities),
             template.cpus, template.memory_mb, command_list(template.provision)]
    return f"{template.name}@{hashlib.sha256(json.dumps(given, sort_keys=True).encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class PoolStatus:
    template: str
    size: int
    ready: int  # running, provisioned, waiting for a claim
    filling: int  # being created or provisioned
    failed: int  # whose create failed, replaced after FAILED_RETRY


class Pools:
    def __init__(self, store: Store, lifecycle: Lifecycle, queue: OperationQueue, templates: TemplateCatalog,
                 quotas: Quotas, enabled: bool) -> None:
        self.store = store
        self.lifecycle = lifecycle
        self.queue = queue
        self.templates = templates
        self.quotas = quotas
        self.enabled = enabled

    # -- claims ---------------------------------------------------------------------------------

    def can_serve(self, template: Template, workspace: Workspace, request_env: dict[str, str]) -> bool:
        """Whether the template's pool can serve the create of `workspace`: the template has a pool, and
        the workspace asks for nothing its pool workspaces lack (other resources, environment, or other
        limits from its owner's quota)."""
        if not self.enabled or template.pool_size <= 0:
            return False
        if (workspace.cpus, workspace.memory_mb) != (template.cpus, template.memory_mb):
            return False
        if any(template.env.get(key) != value for key, value in request_env.items()):
            return False
        return self.quotas.container_limits(workspace) == \
            self.quotas.container_limits(replace(workspace, owner=POOL_OWNER))

    def claim(self, caller: Caller, template: Template, workspace: Workspace,
              params: dict[str, Any] | None) -> tuple[Workspace, Operation] | None:
        """Claim a ready workspace of the template's pool for the create of `workspace` (its owner, name,
        and what the request adds) and queue the create's remaining steps; None when none is ready."""
        operation = new_operation(caller, workspace, OperationType.CREATE,
                                  {**(params or {}), "pooled": True, "provisioned": len(template.provision),
                                   "pool_network": self.lifecycle.network_for(POOL_OWNER).name})
        claimed = self.store.claim_pooled(pool_key(template), {name: getattr(workspace, name)
                                                               for name in CLAIMED_FIELDS},
                                          operation, check=self.quotas.create_check(caller, workspace))
        if claimed is None:
            return None
        self.queue.submit(operation.id)
        log.info("workspace %s of %s claimed from the %s pool as %s", claimed.id, claimed.owner, template.name,
                 claimed.name)
        return claimed, operation

    def run_create(self, operation: Operation) -> dict[str, Any]:
        """The create operation's handler: for a claim, the workspace's own steps (Lifecycle.run_claimed),
        with its move to its owner's network queued beside them (a `join_network` operation, which holds
        nothing: the workspace is usable meanwhile, alone on the pool's isolated network); else the
        whole create."""
        if not operation.params.get("pooled"):
            return self.lifecycle.run_create(operation)
        workspace = self.store.get_workspace(workspace_id_of(operation))
        self.queue.add(new_operation(SYSTEM, workspace, OperationType.JOIN_NETWORK,
                                     {"leave": operation.params["pool_network"]}), exclusive=False)
        return self.lifecycle.run_claimed(operation)

    # -- the refill (a background worker) ---------------------------------------------------------

    def refill(self) -> list[Operation]:
        """Bring every pool to its size: create what is missing, remove what is broken, surplus or made
        from an older form of its template. Returns the operations queued."""
        if not self.enabled:
            return []
        wanted = {pool_key(t): t for t in self.templates.load()[0].values() if t.pool_size > 0}
        by_pool: dict[str, list[Workspace]] = defaultdict(list)
        queued = []
        for entry in self.store.pool_entries():
            if entry.pool in wanted and (entry.status in (*FILLING, WorkspaceStatus.RUNNING) or self._failed(entry)):
                by_pool[entry.pool].append(entry)
            elif entry.current_operation_id is None and entry.status != WorkspaceStatus.DELETING:
                queued += self._remove(entry)
        for key, template in wanted.items():
            entries = by_pool[key]
            for surplus in [e for e in entries if _ready(e)][:max(0, len(entries) - template.pool_size)]:
                queued += self._remove(surplus)
            queued += [self._fill(template, key) for _ in range(template.pool_size - len(entries))]
        return queued

    def _failed(self, entry: Workspace) -> bool:
        return entry.status == WorkspaceStatus.ERROR and utcnow() - entry.updated_at < FAILED_RETRY

    def _fill(self, template: Template, key: str) -> Operation:
        now = utcnow()
        workspace_id = new_id("ws")
        workspace = Workspace(
            id=workspace_id, name=f"pool-{workspace_id.removeprefix('ws_')}", owner=POOL_OWNER,
            template=template.name, image=template.image, status=WorkspaceStatus.PENDING, created_at=now,
            updated_at=now, volume=volume_name(workspace_id), cpus=template.cpus, memory_mb=template.memory_mb,
            env=dict(template.env), command=list(template.command),
            provision=command_list(template.provision),
            ports={port: "" for port in template.ports}, shell=template.shell,
            capabilities=list(template.capabilities), pool=key)
        operation = new_operation(SYSTEM, workspace, OperationType.CREATE)
        self.store.insert_workspace(workspace, operation)
        self.queue.submit(operation.id)
        return operation

    def _remove(self, entry: Workspace) -> list[Operation]:
        operation = new_operation(SYSTEM, entry, OperationType.DELETE)
        try:
            self.store.add_pool_operation(operation)
        except VmhostError as exc:  # busy or claimed since it was read: the next refill sees it again
            log.info("pool workspace %s not removed now: %s", entry.id, exc.detail)
            return []
        self.queue.submit(operation.id)
        return [operation]

    # -- reads ----------------------------------------------------------------------------------

    def status(self) -> list[PoolStatus]:
        """Each template's pool (those with a pool_size), by template name."""
        templates = sorted((t for t in self.templates.load()[0].values() if t.pool_size > 0), key=lambda t: t.name)
        by_pool: dict[str | None, list[Workspace]] = defaultdict(list)
        for entry in self.store.pool_entries():
            by_pool[entry.pool].append(entry)
        found = []
        for template in templates:
            entries = by_pool[pool_key(template)]
            found.append(PoolStatus(
                template=template.name, size=template.pool_size if self.enabled else 0,
                ready=sum(1 for e in entries if _ready(e)),
                filling=sum(1 for e in entries if e.status in FILLING
                            or (e.status == WorkspaceStatus.RUNNING and not _ready(e))),
                failed=sum(1 for e in entries if e.status == WorkspaceStatus.ERROR)))
        return found


def _ready(entry: Workspace) -> bool:
    return entry.status == WorkspaceStatus.RUNNING and entry.current_operation_id is None
