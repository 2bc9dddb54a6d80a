"""The operation queue: every mutation is recorded as an operation, then run on a pool of threads.

Each operation is claimed exactly once in the database, so the provisioner's periodic sweep and the
immediate hand-off never run the same work twice; the store keeps at most one operation in flight per
workspace (an "exec" aside). The queue knows how to run, record and recover operations, not what they
do: a table of handlers runs them, and a Settler (the lifecycle) says how a workspace should stay when
one does not succeed.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any, Protocol

from vmhost.core.models import Caller, Operation, OperationStatus, Workspace, new_id, utcnow
from vmhost.core.store import Store
from vmhost.errors import InvalidInput, StoreUnavailable, VmhostError, WorkspaceNotFound

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 10  # seconds running operations get to end when the daemon stops
MAX_ATTEMPTS = 3  # runs of a repeatable operation that restarts may interrupt before it fails
INTERRUPTED = "interrupted by a restart of the vmhost daemon"


@dataclass(frozen=True)
class Handler:
    """How the queue runs one type of operation."""

    run: Callable[[Operation], dict[str, Any]]
    repeatable: bool = False  # safe to run again from the start after a restart interrupted it
    holds_workspace: bool = True  # its workspace is settled when it fails or is interrupted (not so an "exec")


class Settler(Protocol):
    """How a workspace should stay when an operation on it does not succeed: the lifecycle knows, the
    queue asks. Each may raise VmhostError."""

    def settle_failed(self, operation: Operation, reason: str) -> None:
        """`operation` failed with `reason`; called before that is recorded, so that whoever waits on it
        sees the workspace as it will stay."""

    def settle_cancelled(self, operation: Operation) -> None:
        """`operation` was cancelled while its thread still worked."""

    def settle_abandoned(self, operation: Operation, workspace: Workspace) -> None:
        """Restarts interrupted the repeatable `operation` MAX_ATTEMPTS times; it is recorded failed."""

    def settle_interrupted(self, operation: Operation, workspace: Workspace) -> str | None:
        """A restart interrupted `operation`, which is not repeated: make the workspace's status say what
        Docker shows. None when that is what the operation was to reach, otherwise what Docker shows."""


def new_operation(caller: Caller, workspace: Workspace, type: str, params: dict[str, Any] | None = None) -> Operation:
    """A pending operation on `workspace`, requested by `caller`; nothing is stored yet."""
    return Operation(id=new_id("op", 8), type=type, status=OperationStatus.PENDING, workspace_id=workspace.id,
                     workspace_name=workspace.name, owner=workspace.owner, requested_by=caller.user,
                     created_at=utcnow(), params=params or {})


def workspace_id_of(operation: Operation) -> str:
    """The id of the workspace `operation` acts on."""
    if operation.workspace_id is None:
        raise WorkspaceNotFound(f"operation {operation.id} acts on no workspace")
    return operation.workspace_id


class Cancels:
    """What cancelling a running operation tells the commands it runs: an event they watch, and why."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._reasons: dict[str, str] = {}
        self._lock = threading.Lock()

    def event(self, operation_id: str) -> threading.Event:
        """The event `cancel` sets for this operation (already set when it was cancelled before)."""
        with self._lock:
            return self._events.setdefault(operation_id, threading.Event())

    def reason(self, operation_id: str) -> str:
        with self._lock:
            return self._reasons.get(operation_id, "cancelled")

    def cancel(self, operation_id: str, reason: str) -> None:
        """Kill the command a running operation runs, and any it would start; it then fails with `reason`."""
        with self._lock:
            self._reasons[operation_id] = reason
            self._events.setdefault(operation_id, threading.Event()).set()

    def forget(self, operation_id: str) -> None:
        """The operation has ended: drop what `cancel` kept for it."""
        with self._lock:
            self._events.pop(operation_id, None)
            self._reasons.pop(operation_id, None)


class OperationQueue:
    def __init__(self, store: Store, settler: Settler, cancels: Cancels, *, workers: int) -> None:
        self.store = store
        self.settler = settler
        self.cancels = cancels
        self._handlers: dict[str, Handler] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vmhost-op")
        self._queued: set[str] = set()
        self._queued_lock = threading.Lock()
        self._futures: set[Future[None]] = set()
        self._closing = threading.Event()

    def register(self, handlers: Mapping[str, Handler]) -> None:
        """Run operations of these types with these handlers."""
        self._handlers.update(handlers)

    def add(self, operation: Operation, exclusive: bool = True) -> None:
        """Store the operation (see Store.add_operation) and hand it to the pool."""
        self.store.add_operation(operation, exclusive=exclusive)
        self.submit(operation.id)

    def submit(self, operation_id: str) -> None:
        """Hand a stored operation to the pool, unless it is there already."""
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
            self.submit(operation.id)
        return len(pending)

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

    # -- running one ----------------------------------------------------------------------------

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
                result = handler.run(operation)
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
            self.cancels.forget(operation_id)
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
            self.settler.settle_cancelled(operation)

    def _fail(self, operation: Operation, reason: str, result: dict[str, Any] | None = None) -> None:
        """Settle the workspace, then record the failure: whoever waits on the operation then sees the
        workspace as it will stay."""
        if self.store.get_operation(operation.id).status.finished:  # cancelled while its thread worked
            self.settler.settle_cancelled(operation)
            return
        if operation.workspace_id is not None and self._holds_workspace(operation):
            try:
                self.settler.settle_failed(operation, reason)
            except VmhostError as exc:
                log.warning("could not settle workspace %s after %s failed: %s", operation.workspace_id,
                            operation.type, exc.detail)
        if self.store.finish_operation(operation.id, OperationStatus.FAILED, error=reason, result=result) is None:
            self.settler.settle_cancelled(operation)

    def _holds_workspace(self, operation: Operation) -> bool:
        handler = self._handlers.get(operation.type)
        return handler is None or handler.holds_workspace

    # -- after a crash --------------------------------------------------------------------------

    def recover(self) -> None:
        """After a crash: settle operations left running, then queue what is pending."""
        for operation in self.store.operations_with_status(OperationStatus.RUNNING):
            self._recover(operation)
        self.run_pending()

    def _recover(self, operation: Operation) -> None:
        handler = self._handlers.get(operation.type)
        repeatable = handler is not None and handler.repeatable
        if repeatable and operation.attempts < MAX_ATTEMPTS:
            log.warning("re-queueing interrupted %s operation %s", operation.type, operation.id)
            self.store.requeue_operation(operation.id)
            return
        if not self._holds_workspace(operation):  # e.g. an exec: its command died with the connection to Docker
            self.store.finish_operation(operation.id, OperationStatus.FAILED, error=INTERRUPTED)
            return
        reason = INTERRUPTED
        try:
            workspace = self.store.get_workspace(operation.workspace_id) if operation.workspace_id else None
            if workspace is not None and repeatable:
                self.store.finish_operation(operation.id, OperationStatus.FAILED,
                                            error=f"{reason} ({MAX_ATTEMPTS} attempts)")
                self.settler.settle_abandoned(operation, workspace)
                return
            if workspace is not None:
                shown = self.settler.settle_interrupted(operation, workspace)
                if shown is None:
                    self.store.finish_operation(operation.id, OperationStatus.SUCCEEDED, result={"recovered": True})
                    return
                reason += f"; {shown}"
        except VmhostError as exc:
            reason += f"; {exc.detail}"
        self.store.finish_operation(operation.id, OperationStatus.FAILED, error=reason)
