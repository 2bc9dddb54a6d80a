"""Every business rule of vmhost. Any front door (the daemon, a cron job, a test) drives this object.

Mutations are recorded as operations and run on a pool of threads; each operation is claimed exactly
once in the database, so the provisioner's periodic sweep and the immediate hand-off never run the
same work twice. At most one operation is in flight per workspace.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import secrets
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from vmhost.config import Settings
from vmhost.core import validation
from vmhost.core.clone import clone
from vmhost.core.commands import CommandRunner
from vmhost.core.engines import ContainerSpec, Engine, NetworkSpec
from vmhost.core.events import announce_expiry
from vmhost.core.files import WorkspaceFiles
from vmhost.core.models import (
    Caller,
    ContainerState,
    Door,
    Operation,
    OperationStatus,
    OperationType,
    Scope,
    Token,
    Workspace,
    WorkspaceStatus,
    utcnow,
)
from vmhost.core.output import OperationOutput
from vmhost.core.quotas import Quotas
from vmhost.core.snapshots import Snapshots
from vmhost.core.store import Store
from vmhost.core.templates import TemplateCatalog
from vmhost.core.tokencache import TokenCache
from vmhost.errors import (
    Forbidden,
    InvalidInput,
    InvalidState,
    OperationFailed,
    OperationNotFound,
    ProviderError,
    StoreUnavailable,
    TemplateNotFound,
    TokenNotFound,
    Unauthenticated,
    VmhostError,
    WorkspaceNotFound,
)

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 10  # seconds running operations get to end when the daemon stops
CLONE_FROM_ANYWHERE = "anywhere"
MANAGED_LABEL = "vmhost.managed"
OWNER_LABEL = "vmhost.owner"
_UNSAFE_IN_NAMES = re.compile(r"[^a-zA-Z0-9_.-]")  # Docker's rule for object names
FORCED_DELETE = "cancelled by forced delete"
CANCEL_WAIT = 15
NETWORK_ATTEMPTS = 3
CANCELLABLE_WHEN_RUNNING = (OperationType.EXEC, OperationType.CREATE, OperationType.REBUILD)
T = TypeVar("T")


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


def new_id(prefix: str, nbytes: int = 6) -> str:
    return f"{prefix}_{secrets.token_hex(nbytes)}"


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Orchestrator:
    def __init__(self, store: Store, engine: Engine, templates: TemplateCatalog, settings: Settings | None = None,
                 *, quotas: Quotas | None = None) -> None:
        """`settings` (default: every setting at its default) gives the instance label, the publish
        address, how many operations run at once, the provision and stop timeouts, and the quotas
        unless `quotas` is given."""
        settings = settings or Settings.defaults()
        self.store = store
        self.quotas = quotas or Quotas.from_settings(store, settings)
        self.tokens = TokenCache(store)
        self.engine = engine
        self.templates = templates
        self.instance = settings.instance
        self.publish_address = settings.publish_address
        self.provision_timeout = settings.provision_timeout
        self.stop_timeout = settings.stop_timeout
        self._pool = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="vmhost-op")
        self._queued: set[str] = set()
        self._queued_lock = threading.Lock()
        self._futures: set[Future[None]] = set()
        self._closing = threading.Event()
        self.commands = CommandRunner(self)
        self.snapshots = Snapshots(self)
        self.files = WorkspaceFiles(self)
        self._handlers: dict[str, Callable[[Operation], dict[str, Any]]] = {
            OperationType.CREATE: self._do_create,
            OperationType.START: self._do_start,
            OperationType.STOP: self._do_stop,
            OperationType.RESTART: self._do_restart,
            OperationType.DELETE: self._do_delete,
            OperationType.EXPIRE: self._do_expire,
            OperationType.REBUILD: self._do_rebuild,
            OperationType.EXEC: self.commands.run_operation,
            OperationType.SNAPSHOT: self.snapshots.run_snapshot,
            OperationType.RESTORE: self.snapshots.run_restore,
        }

    def close(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Take no more work and give running operations `grace` seconds to end. One still running then
        stays `running` in the database: the next start's recover() repeats or settles it."""
        self._closing.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._queued_lock:
            running = list(self._futures)
        if wait_futures(running, timeout=grace).not_done:
            log.warning("leaving %d operation(s) running at shutdown; the next start recovers them",
                        len(running))

    # -- labels ---------------------------------------------------------------------------------

    def labels_for(self, workspace: Workspace) -> dict[str, str]:
        return {MANAGED_LABEL: "true", "vmhost.instance": self.instance, "vmhost.workspace": workspace.id,
                OWNER_LABEL: workspace.owner}

    @property
    def instance_labels(self) -> dict[str, str]:
        return {MANAGED_LABEL: "true", "vmhost.instance": self.instance}

    def network_for(self, owner: str) -> NetworkSpec:
        """The bridge network all of one owner's containers join: other owners' containers cannot reach them."""
        name = f"vmhost-{self.instance}-{owner}"
        safe = _UNSAFE_IN_NAMES.sub("-", name)
        if safe != name:  # keep names that differ only in such characters apart
            safe += "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
        return NetworkSpec(name=safe, labels={**self.instance_labels, OWNER_LABEL: owner})

    # -- reads ----------------------------------------------------------------------------------

    def list(self, caller: Caller, status: str | None = None, labels: dict[str, str] | None = None) -> list[Workspace]:
        if status is not None and status not in WorkspaceStatus.__members__.values():
            raise InvalidInput(f"unknown status {status!r}; use one of {', '.join(s.value for s in WorkspaceStatus)}")
        return self.store.list_workspaces(owner=None if caller.admin else caller.user, status=status, labels=labels)

    def get(self, caller: Caller, ref: str) -> Workspace:
        """A workspace by id, or by the caller's name for it (admins: anyone's, when unambiguous)."""
        try:
            workspace = self.store.get_workspace(ref)
            if caller.can_see(workspace.owner):
                return workspace
        except WorkspaceNotFound:
            pass
        workspace = self.store.find_workspace(caller.user, ref)
        if workspace is not None:
            return workspace
        if caller.admin:
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
                        status: str | None = None, limit: int = 200) -> list[Operation]:
        workspace_id = None
        if workspace is not None:
            try:
                workspace_id = self.get(caller, workspace).id
            except WorkspaceNotFound:
                workspace_id = workspace  # history of a deleted workspace, by its id
        return self.store.list_operations(owner=None if caller.admin else caller.user, workspace_id=workspace_id,
                                          type=type, status=status, limit=limit)

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

    @staticmethod
    def require_write(caller: Caller) -> None:
        if caller.scope != Scope.WRITE:
            raise Forbidden("this token is read-only")

    def create(self, caller: Caller, request: WorkspaceRequest) -> tuple[Workspace, Operation]:
        self.require_write(caller)
        validation.check_name(request.name)
        try:
            template = self.templates.get(request.template)
        except TemplateNotFound as exc:  # in a create request, bad input rather than a missing resource
            raise InvalidInput(exc.detail) from exc
        # the clone runs on the host: only admins may name a repository on the host's disk
        repo_url, branch = validation.check_repo(request.repo_url, request.branch, allow_local=caller.admin)
        ttl = self.quotas.ttl_for(caller, validation.check_ttl(request.ttl_seconds))
        now = utcnow()
        provision = list(template.provision) + validation.check_provision(request.provision)
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
            env={**template.env, **validation.check_env(request.env)},
            command=list(template.command),
            provision=[list(p) if isinstance(p, tuple) else p for p in provision],
            plugins=validation.check_plugins(request.plugins),
            ports={validation.check_port(p): "" for p in template.ports},
            shell=template.shell,
            capabilities=list(template.capabilities),
        )
        workspace.volume = f"vmhost-{workspace.id}-workspace"
        # the clone runs on the host: only admins may reach the host's own network (see clone.py)
        clone_from = {"clone_from": CLONE_FROM_ANYWHERE if caller.admin else "public"} if repo_url else None
        operation = self._new_operation(caller, workspace, OperationType.CREATE, clone_from)
        self.store.insert_workspace(workspace, operation, check=self.quotas.create_check(caller, workspace))
        self._submit(operation.id)
        return workspace, operation

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
        """A fresh container from the template's current image, keeping the /workspace volume."""
        return self._act(caller, ref, OperationType.REBUILD)

    def delete(self, caller: Caller, ref: str, force: bool = False) -> Operation:
        """With `force`, first cancel whatever is in flight on the workspace, so that a workspace stuck
        behind an operation that will not finish can still go."""
        if force:
            self.require_write(caller)
            workspace = self.get(caller, ref)
            in_flight = [o for status in (OperationStatus.RUNNING, OperationStatus.PENDING)
                         for o in self.store.list_operations(workspace_id=workspace.id, status=status)]
            for operation in in_flight:
                self._cancel(operation, FORCED_DELETE)
            if any(o.status == OperationStatus.RUNNING for o in in_flight):
                # frees a thread stuck on the container (a provision command that never ends)
                self.engine.remove_container(workspace.container_id or f"vmhost-{workspace.id}")
        return self._act(caller, ref, OperationType.DELETE)

    def cancel_operation(self, caller: Caller, operation_id: str) -> Operation:
        """Cancel a pending operation, kill the command of a running "exec" operation, or stop the
        provisioning of a running create or rebuild (which then fails). Other running operations
        cannot be stopped half-way (InvalidState says what to do instead)."""
        self.require_write(caller)
        operation = self.get_operation(caller, operation_id)
        reason = f"cancelled by {caller.user}"
        if operation.status == OperationStatus.PENDING:
            cancelled = self.store.finish_operation(operation.id, OperationStatus.FAILED, error=reason,
                                                    only_from=(OperationStatus.PENDING,))
            if cancelled is not None:
                if operation.type == OperationType.CREATE:
                    self.store.update_workspace(operation.workspace_id, status=WorkspaceStatus.ERROR,
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
        self.commands.cancel(operation.id, reason)
        return self.store.wait_operation(operation.id, CANCEL_WAIT)

    def _cancel(self, operation: Operation, reason: str) -> None:
        """Mark an operation failed at once, and kill the command it runs (provisioning, "exec"); its
        thread finds out when it ends (see `_run`)."""
        if operation.type in CANCELLABLE_WHEN_RUNNING and operation.status == OperationStatus.RUNNING:
            self.commands.cancel(operation.id, reason)
        self.store.finish_operation(operation.id, OperationStatus.FAILED, error=reason)

    def expire(self, workspace: Workspace) -> Operation:
        """The janitor's way in: stop and delete a workspace whose time is up."""
        operation = self._new_operation(Caller(user="janitor", admin=True), workspace, OperationType.EXPIRE)
        self.store.add_operation(operation)
        self._submit(operation.id)
        return operation

    def _act(self, caller: Caller, ref: str, type: OperationType, params: dict[str, Any] | None = None) -> Operation:
        self.require_write(caller)
        workspace = self.get(caller, ref)
        self.engine.ping()  # with Docker away, answer 503 now rather than queue work bound to fail
        operation = self._new_operation(caller, workspace, type, params)
        self.store.add_operation(operation)
        self._submit(operation.id)
        return operation

    @staticmethod
    def _new_operation(caller: Caller, workspace: Workspace, type: str,
                       params: dict[str, Any] | None = None) -> Operation:
        return Operation(id=new_id("op", 8), type=type, status=OperationStatus.PENDING, workspace_id=workspace.id,
                         workspace_name=workspace.name, owner=workspace.owner, requested_by=caller.user,
                         created_at=utcnow(), params=params or {})

    # -- running operations ---------------------------------------------------------------------

    def _submit(self, operation_id: str) -> None:
        with self._queued_lock:
            if operation_id in self._queued:
                return
            self._queued.add(operation_id)
        try:
            future = self._pool.submit(self._run, operation_id)
        except RuntimeError:  # shutting down; the next start picks it up
            with self._queued_lock:
                self._queued.discard(operation_id)
            return
        with self._queued_lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: Future[None]) -> None:
        with self._queued_lock:
            self._futures.discard(future)

    def run_pending(self) -> int:
        """Hand every queued operation to the pool (the provisioner's sweep). Returns how many."""
        pending = self.store.operations_with_status(OperationStatus.PENDING)
        for operation in pending:
            self._submit(operation.id)
        return len(pending)

    def _run(self, operation_id: str) -> None:
        try:
            operation = self.store.claim_operation(operation_id)
            if operation is None:
                return
            handler = self._handlers.get(operation.type)
            record_end: Callable[[], None]
            try:
                if handler is None:
                    raise InvalidInput(f"unknown operation type {operation.type!r}")
                result = handler(operation)
            except VmhostError as exc:
                record_end = functools.partial(self._fail, operation, exc.detail, result=exc.extra.get("result"))
            except Exception as exc:
                log.exception("operation %s (%s) crashed", operation.id, operation.type)
                record_end = functools.partial(self._fail, operation, f"internal error: {type(exc).__name__}: {exc}")
            else:
                record_end = functools.partial(self._succeed, operation, result)
            self._until_recorded(operation, record_end)
        except VmhostError:
            log.exception("could not record the end of operation %s", operation_id)
        finally:
            self.commands.forget(operation_id)
            with self._queued_lock:
                self._queued.discard(operation_id)

    def _until_recorded(self, operation: Operation, record_end: Callable[[], None]) -> None:
        """Record an operation's end, again and again while the database takes no writes (a full disk),
        so that whoever waits on it sees it end once writes work again, not at the next restart. At
        shutdown it gives up: the operation stays `running` and the next start's recover() settles it."""
        delay = 0.5
        while True:
            try:
                record_end()
                return
            except StoreUnavailable as exc:
                log.warning("cannot record the end of operation %s yet (%s); retrying in %.1f s", operation.id,
                            exc.detail, delay)
                if self._closing.wait(delay):
                    raise
                delay = min(delay * 2, 10.0)

    def _succeed(self, operation: Operation, result: dict[str, Any]) -> None:
        if self.store.finish_operation(operation.id, OperationStatus.SUCCEEDED, result=result) is None:
            self._settle_cancelled(operation)

    def _fail(self, operation: Operation, reason: str, result: dict[str, Any] | None = None) -> None:
        """Settle the workspace, then record the failure: whoever waits on the operation then sees the
        workspace as it will stay."""
        if self.store.get_operation(operation.id).status.finished:  # cancelled while its thread worked
            self._settle_cancelled(operation)
            return
        if operation.workspace_id is not None and operation.type != OperationType.EXEC:
            try:
                self._settle_failed(operation, reason)
            except VmhostError as exc:
                log.warning("could not settle workspace %s after %s failed: %s", operation.workspace_id,
                            operation.type, exc.detail)
        if self.store.finish_operation(operation.id, OperationStatus.FAILED, error=reason, result=result) is None:
            self._settle_cancelled(operation)

    def _settle_failed(self, operation: Operation, reason: str) -> None:
        try:
            workspace = self.store.get_workspace(operation.workspace_id)
        except WorkspaceNotFound:
            return
        if operation.type == OperationType.CREATE:
            self._discard_failed_create(workspace, f"create failed: {reason}")
        elif operation.type in (OperationType.DELETE, OperationType.EXPIRE):
            self.store.update_workspace(workspace.id, status=WorkspaceStatus.ERROR,
                                        status_reason=f"{operation.type} failed: {reason}")
        else:
            self._sync_status(workspace, reason=f"{operation.type} failed: {reason}")

    def _settle_cancelled(self, operation: Operation) -> None:
        """The operation was cancelled while its thread still worked. After a forced delete, remove what
        the thread may have made in Docker since; otherwise leave the workspace to whoever acts on it now."""
        if operation.workspace_id is None:
            return
        try:
            gone = self.store.get_workspace(operation.workspace_id).status == WorkspaceStatus.DELETING
        except WorkspaceNotFound:
            gone = True
        if gone:
            try:
                self._purge(operation.workspace_id, operation.owner)
            except VmhostError as exc:
                log.warning("could not clean up after cancelled %s operation %s: %s", operation.type, operation.id,
                            exc.detail)

    def _purge(self, workspace_id: str, owner: str) -> None:
        """Remove every Docker object labelled as this workspace's, and its owner's network if now idle."""
        labels = {**self.instance_labels, "vmhost.workspace": workspace_id}
        removers = {"container": self.engine.remove_container, "volume": self.engine.remove_volume,
                    "image": self.engine.remove_image}  # remove_image leaves one a restored copy runs from
        for found in sorted(self.engine.list_managed(labels), key=lambda o: o.kind != "container"):
            removers[found.kind](found.id)
        self.release_networks(owner)

    def _discard_failed_create(self, workspace: Workspace, reason: str) -> None:
        """A failed create leaves its row in error (the operation keeps the output) and nothing in Docker."""
        try:
            self.remove_resources(workspace)
        except VmhostError as exc:
            reason += f"; its container and volume are still in Docker ({exc.detail}): delete the workspace"
        self.store.update_workspace(workspace.id, status=WorkspaceStatus.ERROR, status_reason=reason)

    def _sync_status(self, workspace: Workspace, reason: str | None = None) -> Workspace:
        """Make the stored status say what Docker shows."""
        state = self.engine.inspect(workspace.container_id) if workspace.container_id else None
        if state is None or not state.exists:
            return self.store.update_workspace(workspace.id, status=WorkspaceStatus.ERROR,
                                               status_reason=reason or "container removed outside vmhost")
        status = WorkspaceStatus.RUNNING if state.running else WorkspaceStatus.STOPPED
        return self.store.update_workspace(workspace.id, status=status, status_reason=reason,
                                           ports=state.ports or workspace.ports)

    def _output(self, operation: Operation) -> OperationOutput:
        """Where a step records output: after what earlier steps (or attempts) recorded."""
        return OperationOutput(self.store, operation.id, self.store.get_operation(operation.id).output)

    def _do_create(self, operation: Operation) -> dict[str, Any]:
        workspace = self.store.update_workspace(operation.workspace_id, status=WorkspaceStatus.PROVISIONING,
                                                status_reason=None)
        self.engine.ensure_image(workspace.image)
        self.engine.create_volume(workspace.volume, self.labels_for(workspace))
        container_id = self._create_container(workspace)
        workspace = self.store.update_workspace(workspace.id, container_id=container_id)
        if workspace.repo_url:
            self._clone_into(workspace, operation)
        self._start_container(workspace)
        self._provision(workspace, operation)
        state = self._confirm_running(workspace)
        self.store.update_workspace(workspace.id, status=WorkspaceStatus.RUNNING, ports=state.ports)
        return {"container_id": container_id}

    def _create_container(self, workspace: Workspace) -> str:
        limits = self.quotas.container_limits(workspace)
        network = self.network_for(workspace.owner)
        spec = ContainerSpec(
            name=f"vmhost-{workspace.id}", image=workspace.image, command=workspace.command,
            labels=self.labels_for(workspace), volume=workspace.volume, env=workspace.env, cpus=limits.cpus,
            memory_mb=limits.memory_mb, pids_limit=limits.pids, network=network.name, ports=tuple(workspace.ports),
            publish_address=self.publish_address, hostname=workspace.name,
            capabilities=tuple(workspace.capabilities))
        self.engine.ensure_network(network)
        return self._on_network(network, lambda: self.engine.create_container(spec))

    def _start_container(self, workspace: Workspace) -> None:
        self._on_network(self.network_for(workspace.owner), lambda: self.engine.start(workspace.container_id))

    def _on_network(self, network: NetworkSpec, act: Callable[[], T]) -> T:
        """Create or start a container on `network`. Until the container runs, Docker lets the network go
        (release_networks may see none of its owner's containers left): when Docker finds something
        missing, make the network again and try again, a few times."""
        for _ in range(NETWORK_ATTEMPTS - 1):
            try:
                return act()
            except ProviderError as exc:
                if not exc.extra.get("missing"):
                    raise
            self.engine.ensure_network(network)
        return act()

    def _provision(self, workspace: Workspace, operation: Operation) -> None:
        """Run the provision commands in order; each may run `provision_timeout` seconds, and a cancel
        (a forced delete) kills the one running with all its processes."""
        cancel = self.commands.cancel_event(operation.id)
        with self._output(operation) as write:
            for number, command in enumerate(workspace.provision, start=1):
                argv = command if isinstance(command, list) else ["/bin/sh", "-c", command]
                shown = command if isinstance(command, str) else " ".join(command)
                self._stop_if_cancelled(operation, cancel)
                write("stdout", f"$ {shown}\n".encode())
                outcome = self.engine.run_command(workspace.container_id, argv, on_output=write,
                                                  workdir="/workspace", timeout=self.provision_timeout,
                                                  cancel=cancel)
                self._stop_if_cancelled(operation, cancel)
                if outcome.timed_out:
                    raise OperationFailed(f"provision command {number} ({shown}) ran longer than "
                                          f"{self.provision_timeout:g} s (the provision_timeout setting) and was "
                                          "killed with all its processes; see the operation's output")
                if outcome.error:
                    raise ProviderError(f"provision command {number} ({shown}) could not run: {outcome.error}")
                if outcome.exit_code != 0:
                    raise ProviderError(f"provision command {number} ({shown}) exited with {outcome.exit_code}; "
                                        "see the operation's output")
        self._stop_if_cancelled(operation, cancel)  # also when cancelled before provisioning, or with none

    def _stop_if_cancelled(self, operation: Operation, cancel: threading.Event) -> None:
        if cancel.is_set():
            raise OperationFailed(self.commands.cancel_reason(operation.id))

    def _confirm_running(self, workspace: Workspace) -> ContainerState:
        state = self.engine.inspect(workspace.container_id)
        if not state.running:
            raise ProviderError(f"the container stopped right after starting (Docker says {state.status}); "
                                f"check the template's command {workspace.command}")
        return state

    def _clone_into(self, workspace: Workspace, operation: Operation) -> None:
        with self._output(operation) as write:
            write("stdout", f"$ git clone {workspace.repo_url}"
                            f"{' --branch ' + workspace.branch if workspace.branch else ''}\n".encode())
        with tempfile.TemporaryDirectory(prefix="vmhost-clone-") as tmp:
            checkout = os.path.join(tmp, "src")
            clone(workspace.repo_url, workspace.branch, checkout,
                  anywhere=operation.params.get("clone_from") == CLONE_FROM_ANYWHERE)
            with tempfile.TemporaryFile(dir=tmp) as archive:
                with tarfile.open(fileobj=archive, mode="w") as tar:
                    for entry in sorted(os.listdir(checkout)):
                        tar.add(os.path.join(checkout, entry), arcname=entry)
                archive.seek(0)
                self.engine.put_archive(workspace.container_id, "/workspace", archive)
            shutil.rmtree(checkout, ignore_errors=True)

    def _do_start(self, operation: Operation) -> dict[str, Any]:
        workspace = self._with_container(operation)
        self._start_container(workspace)
        self._sync_status(workspace)
        return {}

    def _do_stop(self, operation: Operation) -> dict[str, Any]:
        workspace = self._with_container(operation)
        self.engine.stop(workspace.container_id, self.stop_timeout)
        self._sync_status(workspace)
        return {}

    def _do_restart(self, operation: Operation) -> dict[str, Any]:
        workspace = self._with_container(operation)
        self.engine.restart(workspace.container_id, self.stop_timeout)
        self._sync_status(workspace)
        return {}

    def _do_rebuild(self, operation: Operation) -> dict[str, Any]:
        workspace = self.store.update_workspace(operation.workspace_id, status=WorkspaceStatus.PROVISIONING,
                                                status_reason=None)
        try:
            image = self.templates.get(workspace.template).image
        except TemplateNotFound:  # the template is gone: rebuild from the image the workspace was made of
            image = workspace.image
        self.engine.ensure_image(image)
        self.engine.remove_container(workspace.container_id or f"vmhost-{workspace.id}")
        workspace = self.store.update_workspace(workspace.id, image=image, container_id=None)
        workspace = self.store.update_workspace(workspace.id, container_id=self._create_container(workspace))
        self._start_container(workspace)
        self._provision(workspace, operation)
        state = self._confirm_running(workspace)
        self.store.update_workspace(workspace.id, status=WorkspaceStatus.RUNNING, ports=state.ports)
        return {"container_id": workspace.container_id, "image": image}

    def _with_container(self, operation: Operation) -> Workspace:
        workspace = self.store.get_workspace(operation.workspace_id)
        if not workspace.container_id:
            raise ProviderError(f"workspace {workspace.name!r} has no container (status {workspace.status}); "
                                "delete it and create it again")
        return workspace

    def _do_delete(self, operation: Operation) -> dict[str, Any]:
        try:
            workspace = self.store.update_workspace(operation.workspace_id, status=WorkspaceStatus.DELETING)
        except WorkspaceNotFound:
            return {}
        self.remove_resources(workspace)
        self.store.delete_workspace(workspace.id)
        return {}

    def _do_expire(self, operation: Operation) -> dict[str, Any]:
        workspace = self.store.get_workspace(operation.workspace_id)
        if workspace.container_id and self.engine.inspect(workspace.container_id).running:
            self.engine.stop(workspace.container_id, self.stop_timeout)
        return self._do_delete(operation)

    def remove_resources(self, workspace: Workspace) -> None:
        """Remove a workspace's container, volume and snapshots (images and volume archives), and its
        owner's network when no other container of theirs is on it."""
        self.engine.remove_container(workspace.container_id or f"vmhost-{workspace.id}")
        self.snapshots.purge(workspace)
        if workspace.volume:
            self.engine.remove_volume(workspace.volume)
        self.release_networks(workspace.owner)

    def release_networks(self, owner: str | None = None) -> None:
        """Remove the networks (one owner's, or every owner's) that none of the owner's containers is on.
        A create that races with this makes the network again (see _on_network)."""
        labels = {**self.instance_labels, **({OWNER_LABEL: owner} if owner is not None else {})}
        networks = self.engine.list_managed(labels, kinds=("network",))
        if not networks:
            return
        in_use = {c.labels.get(OWNER_LABEL) for c in self.engine.list_managed(labels, kinds=("container",))}
        for network in networks:
            if network.labels.get(OWNER_LABEL) not in in_use:
                self.engine.remove_network(network.id)

    # -- start-up and background work ----------------------------------------------------------

    def recover(self) -> None:
        """After a crash: settle operations left running, then queue what is pending."""
        for operation in self.store.operations_with_status(OperationStatus.RUNNING):
            self._recover(operation)
        self.run_pending()

    def _recover(self, operation: Operation) -> None:
        if operation.type == OperationType.EXEC:  # its command died with the connection to Docker
            self.store.finish_operation(operation.id, OperationStatus.FAILED,
                                        error="interrupted by a restart of the vmhost daemon")
            return
        redo = (OperationType.CREATE, OperationType.DELETE, OperationType.EXPIRE, OperationType.REBUILD,
                OperationType.SNAPSHOT, OperationType.RESTORE)
        if operation.type in redo and operation.attempts < 3:
            # these steps are safe to repeat from the start
            log.warning("re-queueing interrupted %s operation %s", operation.type, operation.id)
            self.store.requeue_operation(operation.id)
            return
        reason = "interrupted by a restart of the vmhost daemon"
        try:
            workspace = self.store.get_workspace(operation.workspace_id) if operation.workspace_id else None
            if workspace is not None and operation.type in redo:
                self.store.finish_operation(operation.id, OperationStatus.FAILED, error=f"{reason} (3 attempts)")
                if operation.type == OperationType.CREATE:
                    self._discard_failed_create(workspace, f"create {reason} (3 attempts)")
                else:
                    self.store.update_workspace(workspace.id, status=WorkspaceStatus.ERROR,
                                                status_reason=f"{operation.type} {reason}")
                return
            if workspace is not None:
                workspace = self._sync_status(workspace)
                wanted = WorkspaceStatus.STOPPED if operation.type == OperationType.STOP else WorkspaceStatus.RUNNING
                if workspace.status == wanted:
                    self.store.finish_operation(operation.id, OperationStatus.SUCCEEDED,
                                                result={"recovered": True})
                    return
                reason += f"; Docker shows the workspace {workspace.status}"
        except VmhostError as exc:
            reason += f"; {exc.detail}"
        self.store.finish_operation(operation.id, OperationStatus.FAILED, error=reason)

    def expire_due(self) -> list[Operation]:
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

    # -- tokens ---------------------------------------------------------------------------------

    def create_token(self, caller: Caller, user: str | None = None, name: str = "", scope: Scope = Scope.WRITE,
                     admin: bool = False, ttl_seconds: int | None = None) -> tuple[Token, str]:
        self.require_write(caller)
        user = user or caller.user
        if (user != caller.user or admin) and not caller.admin:
            raise Forbidden("only admins create tokens for other users or admin tokens")
        validation.check_user(user)
        if ttl_seconds is not None:
            validation.check_ttl(ttl_seconds)
        now = utcnow()
        token = Token(id=new_id("tok"), user=user, name=name[:128], scope=Scope(scope), admin=admin,
                      created_at=now, expires_at=now + timedelta(seconds=ttl_seconds) if ttl_seconds else None)
        secret = "vmh_" + secrets.token_urlsafe(32)
        self.store.insert_token(token, hash_token(secret))
        return token, secret

    def list_tokens(self, caller: Caller) -> list[Token]:
        return self.store.list_tokens(user=None if caller.admin else caller.user)

    def revoke_token(self, caller: Caller, token_id: str) -> Token:
        self.require_write(caller)
        token = self.store.get_token(token_id)
        if token is None or not caller.can_see(token.user):
            raise TokenNotFound(f"no token {token_id!r}")
        self.store.revoke_token(token_id)
        return self.store.get_token(token_id)

    def authenticate_token(self, secret: str, address: str | None = None) -> Caller:
        token = self.tokens.find(hash_token(secret))
        if token is None:
            raise Unauthenticated("invalid API token")
        if token.revoked_at is not None:
            raise Unauthenticated("this API token was revoked")
        if token.expires_at is not None and token.expires_at <= utcnow():
            raise Unauthenticated("this API token has expired")
        return Caller(user=token.user, admin=token.admin, door=Door.TOKEN, address=address, scope=token.scope,
                      token_id=token.id)
