"""Every business rule of vmhost. Any front door (the daemon, a cron job, a test) drives this object.

The use cases, thin: they check the caller and the input, then queue operations (see operations.py),
which the container lifecycle (lifecycle.py) carries out. Snapshots, commands, files, ports and tokens are
beside it, as attributes of the same name.
"""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from vmhost.config import Settings
from vmhost.core import validation
from vmhost.core.activity import Activity, Clock
from vmhost.core.commands import CommandRunner
from vmhost.core.drain import Drains
from vmhost.core.engines import Engine, NetworkSpec
from vmhost.core.events import announce_expiry
from vmhost.core.files import WorkspaceFiles
from vmhost.core.idle import IdleStops
from vmhost.core.layers import initial_sources
from vmhost.core.lifecycle import CLONE_FROM_ANYWHERE, Lifecycle, volume_name
from vmhost.core.models import (
    Caller,
    Operation,
    OperationStatus,
    OperationType,
    Scope,
    Token,
    Workspace,
    WorkspaceStatus,
    command_list,
    new_id,
    utcnow,
)
from vmhost.core.nodes import Nodes, NodeWatch
from vmhost.core.operations import SHUTDOWN_GRACE, Cancels, Handler, OperationQueue, new_operation, workspace_id_of
from vmhost.core.paging import DEFAULT_LIMIT, Page
from vmhost.core.pools import Pools, PoolStatus
from vmhost.core.ports import WorkspacePorts
from vmhost.core.quotas import Quotas
from vmhost.core.scheduler import Scheduler
from vmhost.core.snapshots import Snapshots
from vmhost.core.sshkeys import SshKeys
from vmhost.core.store import Store
from vmhost.core.templates import TemplateCatalog
from vmhost.core.tokens import Tokens
from vmhost.errors import (
    InvalidInput,
    InvalidState,
    OperationNotFound,
    ProviderError,
    TemplateNotFound,
    VmhostError,
    WorkspaceNotFound,
)

log = logging.getLogger(__name__)

FORCED_DELETE = "cancelled by forced delete"
CANCEL_WAIT = 15
CANCELLABLE_WHEN_RUNNING = (OperationType.EXEC, OperationType.CREATE, OperationType.REBUILD)


@dataclass
class WorkspaceRequest:
    name: str
    template: str = "base"
    ttl_seconds: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    repo_url: str | None = None
    branch: str | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    provision: list[str | list[str]] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    devcontainer: bool = False  # apply the repository's devcontainer.json (also when the template says so)


class Orchestrator:
    def __init__(self, store: Store, engine: Engine, templates: TemplateCatalog, settings: Settings | None = None,
                 *, quotas: Quotas | None = None, clock: Clock = utcnow) -> None:
        """`settings` (default: every setting at its default) gives the instance label, the publish
        address, how many operations run at once, the provision and stop timeouts, the idle warning, and
        the quotas unless `quotas` is given. `clock` is the time the idle stop goes by (a test's own)."""
        settings = settings or Settings.defaults()
        self.store = store
        self.activity = Activity(store, clock)
        self.quotas = quotas or Quotas.from_settings(store, settings)
        self.engine = engine
        self.templates = templates
        self.instance = settings.instance
        self.tokens = Tokens(store)
        self.ssh_keys = SshKeys(store)
        cancels = Cancels()
        self.lifecycle = Lifecycle(store, engine, templates, self.quotas, cancels,
                                   lambda workspace: self.snapshots.purge(workspace), instance=settings.instance,
                                   publish_address=settings.publish_address,
                                   provision_timeout=settings.provision_timeout, stop_timeout=settings.stop_timeout)
        self.queue = OperationQueue(store, self.lifecycle, cancels, workers=settings.workers)
        self.commands = CommandRunner(store, engine, self.queue, self.get, self.activity)
        self.snapshots = Snapshots(store, engine, self.queue, self.lifecycle, self.quotas, self.get, self.activity)
        self.files = WorkspaceFiles(engine, self.get, self.activity)
        self.ports = WorkspacePorts(store, engine, self.get, lambda owner: self.lifecycle.network_for(owner).name,
                                    on_traffic=self.activity.touch)
        self.nodes = Nodes(store, engine)
        self.node_watch = NodeWatch(store, engine, self.lifecycle.sync_status)
        self.drains = Drains(store, engine, self.queue, self.lifecycle, self.quotas, self.nodes)
        self.idle = IdleStops(store, self.activity, self.lifecycle, self.queue, settings.idle_warning)
        self.scheduler = Scheduler(store, self.lifecycle, self.queue, self.activity.clock)
        self.pools = Pools(store, self.lifecycle, self.queue, templates, self.quotas,
                           enabled=settings.engine != "swarm")
        lifecycle = self.lifecycle
        self.queue.register({
            OperationType.CREATE: Handler(self.pools.run_create, repeatable=True),
            OperationType.JOIN_NETWORK: Handler(lifecycle.run_join_network, repeatable=True, holds_workspace=False),
            OperationType.START: Handler(lifecycle.run_start),
            OperationType.STOP: Handler(lifecycle.run_stop),
            OperationType.RESTART: Handler(lifecycle.run_restart),
            OperationType.DELETE: Handler(lifecycle.run_delete, repeatable=True),
            OperationType.DRAIN: Handler(self.drains.run_drain, holds_workspace=False),
            OperationType.EXPIRE: Handler(lifecycle.run_expire, repeatable=True),
            OperationType.REBUILD: Handler(lifecycle.run_rebuild, repeatable=True),
            OperationType.EXEC: Handler(self.commands.run_operation, holds_workspace=False),
            OperationType.SNAPSHOT: Handler(self.snapshots.run_snapshot, repeatable=True),
            OperationType.RESTORE: Handler(self.snapshots.run_restore, repeatable=True),
            OperationType.IDLE_STOP: Handler(self.idle.run_operation),
            OperationType.AUTOSTART: Handler(self.scheduler.run_operation),
            OperationType.AUTOSTOP: Handler(self.scheduler.run_operation),
        })

    def close(self, grace: float = SHUTDOWN_GRACE) -> None:
        """See OperationQueue.close; then store the activity recorded since the last flush."""
        try:
            self.queue.close(grace)
        finally:
            self.activity.flush()

    # -- activity (see vmhost.core.activity and vmhost.core.idle) -------------------------------

    def touch(self, workspace_id: str | None) -> None:
        """Record activity on a workspace now, for its idle stop: the one way in for whatever carries
        work to it (the API's actions, commands; port previews, tunnels and SSH once they exist). A
        connection that lasts holds `self.activity.session(workspace_id)` instead."""
        self.activity.touch(workspace_id)

    def stop_idle(self) -> builtins.list[Operation]:
        """The janitor's sweep for idle workspaces (see IdleStops.sweep)."""
        return self.idle.sweep()

    def run_schedules(self) -> builtins.list[Operation]:
        """The scheduler's sweep: the autostarts and autostops due (see Scheduler.sweep)."""
        return self.scheduler.sweep()

    def pool_status(self, caller: Caller) -> builtins.list[PoolStatus]:
        """Each template's warm pool: its size, and how many of its workspaces are ready or filling."""
        caller.require_admin("see the warm pools")
        return self.pools.status()

    def recover(self) -> None:
        """After a crash: settle operations left running, then queue what is pending."""
        self.queue.recover()

    def run_pending(self) -> int:
        """Hand every queued operation to the pool (the provisioner's sweep). Returns how many."""
        return self.queue.run_pending()

    # -- labels and networks (see Lifecycle) ----------------------------------------------------

    def labels_for(self, workspace: Workspace) -> dict[str, str]:
        return self.lifecycle.labels_for(workspace)

    @property
    def instance_labels(self) -> dict[str, str]:
        return self.lifecycle.instance_labels

    def network_for(self, owner: str) -> NetworkSpec:
        return self.lifecycle.network_for(owner)

    def release_networks(self, owner: str | None = None) -> None:
        self.lifecycle.release_networks(owner)

    def remove_resources(self, workspace: Workspace) -> None:
        self.lifecycle.remove_resources(workspace)

    # -- reads ----------------------------------------------------------------------------------

    def list(self, caller: Caller, status: str | None = None, labels: dict[str, str] | None = None,
             limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page[Workspace]:
        if status is not None and status not in WorkspaceStatus.__members__.values():
            raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(s.value for s in WorkspaceStatus)}")
        page = self.store.page_workspaces(owner=caller.owner_filter, status=status, labels=labels,
                                          limit=limit, cursor=cursor)
        self.idle.with_activity(page.items)
        return page

    def get(self, caller: Caller, ref: str) -> Workspace:
        """A workspace by id, or by the caller's name for it (admins: anyone's, when unambiguous), with the
        last activity its idle stop counts."""
        return self.idle.with_activity([self._find(caller, ref)])[0]

    def _find(self, caller: Caller, ref: str) -> Workspace:
        try:
            workspace = self.store.get_workspace(ref)
            if caller.can_see(workspace.owner):
                return workspace
        except WorkspaceNotFound:
            pass
        named_by_caller = self.store.find_workspace(caller.user, ref)
        if named_by_caller is not None:
            return named_by_caller
        if caller.sees_everyone:
            named = self.store.find_workspaces_named(ref)
            if len(named) == 1:
                return named[0]
            if len(named) > 1:
                owners = ", ".join(sorted(w.owner for w in named))
                raise InvalidInput(f"several workspaces are named {ref!r} (owners: {owners}); use the id")
        raise WorkspaceNotFound(f"no workspace {ref!r}")

    def get_operation(self, caller: Caller, operation_id: str) -> Operation:
        operation = self.store.get_operation(operation_id)
        if not caller.can_see(operation.owner):
            raise OperationNotFound(f"no operation {operation_id!r}")
        return operation

    def list_operations(self, caller: Caller, workspace: str | None = None, type: str | None = None,
                        status: str | None = None, limit: int = DEFAULT_LIMIT,
                        cursor: str | None = None) -> Page[Operation]:
        workspace_id = None
        if workspace is not None:
            try:
                workspace_id = self.get(caller, workspace).id
            except WorkspaceNotFound:
                workspace_id = workspace  # history of a deleted workspace, by its id
        return self.store.page_operations(owner=caller.owner_filter, workspace_id=workspace_id,
                                          type=type, status=status, limit=limit, cursor=cursor)

    def wait_operation(self, caller: Caller, operation_id: str, timeout: float) -> Operation:
        self.get_operation(caller, operation_id)
        return self.store.wait_operation(operation_id, timeout)

    def health(self) -> dict[str, Any]:
        docker_ok, docker_detail = True, "ok"
        try:
            self.engine.ping()
        except VmhostError as exc:
            docker_ok, docker_detail = False, exc.detail
        db_ok = self.store.ping()
        return {
            "status": "ok" if docker_ok and db_ok else "degraded",
            "docker": {"ok": docker_ok, "detail": docker_detail},
            "database": {"ok": db_ok, "detail": "ok" if db_ok else "database does not answer",
                         "schema_version": self.store.schema_version if db_ok else None},
        }

    # -- mutations ------------------------------------------------------------------------------

    def create(self, caller: Caller, request: WorkspaceRequest) -> tuple[Workspace, Operation]:
        caller.require_write()
        validation.check_name(request.name)
        try:
            template = self.templates.get(request.template)
        except TemplateNotFound as exc:  # in a create request, bad input rather than a missing resource
            raise InvalidInput(exc.detail) from exc
        repo_url, branch = validation.check_repo(request.repo_url, request.branch,
                                                 allow_local=caller.may_clone_from_host)
        ttl = self.quotas.ttl_for(caller, validation.check_ttl(request.ttl_seconds))
        idle_timeout = self.quotas.idle_timeout_for(caller, template.idle_timeout_seconds, cap=True)
        now = utcnow()
        request_env = validation.check_env(request.env)
        request_provision = validation.check_provision(request.provision)
        provision = list(template.provision) + request_provision
        devcontainer = request.devcontainer or template.devcontainer
        if devcontainer and not repo_url:
            raise InvalidInput("a devcontainer workspace needs a repository (repo_url): its devcontainer.json is "
                               "read from the clone")
        workspace = Workspace(
            id=new_id("ws"),
            name=request.name,
            owner=caller.user,
            template=template.name,
            image=template.image,
            status=WorkspaceStatus.PENDING,
            created_at=now,
            updated_at=now,
            repo_url=repo_url,
            branch=branch,
            cpus=validation.check_cpus(request.cpus if request.cpus is not None else template.cpus,
                                       self._cpu_limit()),
            memory_mb=validation.check_memory(request.memory_mb if request.memory_mb is not None
                                              else template.memory_mb),
            ttl_seconds=ttl,
            expires_at=now + timedelta(seconds=ttl) if ttl else None,
            labels=validation.check_labels(request.labels),
            env={**template.env, **request_env},
            command=list(template.command),
            provision=command_list(provision),
            plugins=validation.check_plugins(request.plugins),
            ports={validation.check_port(p): "" for p in template.ports},
            shell=template.shell,
            capabilities=list(template.capabilities),
            idle_timeout_seconds=idle_timeout,
            last_activity_at=self.activity.clock(),
            devcontainer=devcontainer,
            sources=initial_sources(template, request_env, request_provision),
        )
        workspace.volume = volume_name(workspace.id)
        clone_from = self._clone_params(caller, workspace) if repo_url else None
        if not devcontainer and self.pools.can_serve(template, workspace, request_env):
            claimed = self.pools.claim(caller, template, workspace, clone_from)
            if claimed is not None:
                return claimed
        limits = self.quotas.container_limits(workspace)
        self.nodes.check_room(limits.cpus, limits.memory_mb)
        operation = new_operation(caller, workspace, OperationType.CREATE, clone_from)
        self.store.insert_workspace(workspace, operation, check=self.quotas.create_check(caller, workspace))
        self.queue.submit(operation.id)
        return workspace, operation

    @staticmethod
    def _clone_params(caller: Caller, workspace: Workspace) -> dict[str, Any]:
        """How an operation clones the workspace's repository for `caller` (see vmhost.core.clone), and,
        for a devcontainer.json, whether it may add capabilities (admins only)."""
        params: dict[str, Any] = {"clone_from": CLONE_FROM_ANYWHERE if caller.may_clone_from_host else "public"}
        if workspace.devcontainer and caller.admin:
            params["admin"] = True
        return params

    def _cpu_limit(self) -> int | None:
        self.engine.ping()  # with Docker away, refuse the create at once rather than fail it later
        try:
            return self.engine.cpu_count()  # read once, so it no longer tells whether Docker answers
        except ProviderError:
            return None

    def start(self, caller: Caller, ref: str) -> Operation:
        return self._act(caller, ref, OperationType.START)

    def stop(self, caller: Caller, ref: str) -> Operation:
        return self._act(caller, ref, OperationType.STOP)

    def restart(self, caller: Caller, ref: str) -> Operation:
        return self._act(caller, ref, OperationType.RESTART)

    def rebuild(self, caller: Caller, ref: str) -> Operation:
        """A fresh container from the template's current image, keeping the /workspace volume; a
        devcontainer workspace's from its repository's devcontainer.json as it is now."""
        workspace = self.get(caller, ref)
        params = self._clone_params(caller, workspace) if workspace.devcontainer else None
        return self._act(caller, workspace.id, OperationType.REBUILD, params)

    def delete(self, caller: Caller, ref: str, force: bool = False) -> Operation:
        """With `force`, first cancel whatever is in flight on the workspace, so that a workspace stuck
        behind an operation that will not finish can still go."""
        if force:
            caller.require_write()
            workspace = self.get(caller, ref)
            in_flight = [o for status in (OperationStatus.RUNNING, OperationStatus.PENDING)
                         for o in self.store.list_operations(workspace_id=workspace.id, status=status)]
            for operation in in_flight:
                self._cancel(operation, FORCED_DELETE)
            if any(o.status == OperationStatus.RUNNING for o in in_flight):
                # frees a thread stuck on the container (a provision command that never ends)
                self.lifecycle.remove_container(workspace)
        return self._act(caller, ref, OperationType.DELETE)

    def cancel_operation(self, caller: Caller, operation_id: str) -> Operation:
        """Cancel a pending operation, kill the command of a running "exec" operation, or stop the
        provisioning of a running create or rebuild (which then fails). Other running operations
        cannot be stopped half-way (InvalidState says what to do instead)."""
        caller.require_write()
        operation = self.get_operation(caller, operation_id)
        reason = f"cancelled by {caller.user}"
        if operation.status == OperationStatus.PENDING:
            cancelled = self.store.finish_operation(operation.id, OperationStatus.FAILED, error=reason,
                                                    only_from=(OperationStatus.PENDING,))
            if cancelled is not None:
                if operation.type == OperationType.CREATE:
                    self.store.update_workspace(workspace_id_of(operation), status=WorkspaceStatus.ERROR,
                                                status_reason=f"create {reason} before it started")
                return cancelled
            operation = self.store.get_operation(operation.id)  # it started meanwhile
        if operation.status.finished:
            raise InvalidState(f"operation {operation.id} has already {operation.status}; there is nothing to cancel")
        if operation.type not in CANCELLABLE_WHEN_RUNNING:
            raise InvalidState(
                f"operation {operation.id} ({operation.type}) is already running and cannot be stopped half-way; "
                f"wait for it, or delete the workspace anyway with 'vmhost ws rm {operation.workspace_name} "
                "--force' (DELETE /api/v1/workspaces/{id}?force=true)")
        self.queue.cancels.cancel(operation.id, reason)
        return self.store.wait_operation(operation.id, CANCEL_WAIT)

    def _cancel(self, operation: Operation, reason: str) -> None:
        """Mark an operation failed at once, and kill the command it runs (provisioning, "exec"); its
        thread finds out when it ends, and the queue has the lifecycle settle what it left (settle_cancelled)."""
        if operation.type in CANCELLABLE_WHEN_RUNNING and operation.status == OperationStatus.RUNNING:
            self.queue.cancels.cancel(operation.id, reason)
        self.store.finish_operation(operation.id, OperationStatus.FAILED, error=reason)

    def expire(self, workspace: Workspace) -> Operation:
        """The janitor's way in: stop and delete a workspace whose time is up."""
        operation = new_operation(Caller(user="janitor", admin=True), workspace, OperationType.EXPIRE)
        self.queue.add(operation)
        return operation

    def _act(self, caller: Caller, ref: str, type: OperationType, params: dict[str, Any] | None = None) -> Operation:
        caller.require_write()
        workspace = self.get(caller, ref)
        if workspace.status == WorkspaceStatus.UNREACHABLE and type != OperationType.DELETE:
            raise InvalidState(workspace.unreachable_detail())
        self.engine.ping()  # with Docker away, answer 503 now rather than queue work bound to fail
        operation = new_operation(caller, workspace, type, params)
        self.queue.add(operation)
        self.touch(workspace.id)
        return operation

    # -- background work ----------------------------------------------------------------------

    def expire_due(self) -> builtins.list[Operation]:
        """The janitor's sweep: an expire operation for every workspace past its expiry."""
        started = []
        for workspace in self.store.expired_workspaces(utcnow()):
            if workspace.current_operation_id is not None:
                continue
            try:
                announce_expiry(self.store, workspace, "expired")
                started.append(self.expire(workspace))
            except VmhostError as exc:
                log.info("janitor skipped %s: %s", workspace.id, exc.detail)
        return started

    # -- tokens (see Tokens) --------------------------------------------------------------------

    def create_token(self, caller: Caller, user: str | None = None, name: str = "", scope: Scope = Scope.WRITE,
                     admin: bool = False, ttl_seconds: int | None = None) -> tuple[Token, str]:
        return self.tokens.create(caller, user, name, scope, admin, ttl_seconds)

    def list_tokens(self, caller: Caller, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page[Token]:
        return self.tokens.list(caller, limit, cursor)

    def revoke_token(self, caller: Caller, token_id: str) -> Token:
        return self.tokens.revoke(caller, token_id)

    def authenticate_token(self, secret: str, address: str | None = None) -> Caller:
        return self.tokens.authenticate(secret, address)
