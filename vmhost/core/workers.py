"""Background workers: each calls the orchestrator on an interval, like any other client would."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from vmhost.core.audit import AuditLog
from vmhost.core.events import prune_events, warn_expiring
from vmhost.core.orchestrator import Orchestrator

log = logging.getLogger(__name__)


class PeriodicWorker:
    """Runs `task` every `interval` seconds on its own thread until stopped."""

    def __init__(self, name: str, interval: float, task: Callable[[], object]) -> None:
        self.name = name
        self.interval = interval
        self.task = task
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"vmhost-{name}", daemon=True)
        self.runs = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.task()
            except Exception:
                log.exception("%s run failed", self.name)
            self.runs += 1


def standard_workers(orchestrator: Orchestrator, janitor_interval: float, provisioner_interval: float,
                     expiry_warning: float = 300.0, event_retention: float | None = None,
                     audit_retention: float | None = None) -> list[PeriodicWorker]:
    """The provisioner (picks up queued operations), the janitor (warns about workspaces close to their
    expiry, expires those past it, removes networks no container is on) and, with their retentions, the
    event and audit pruners."""
    def janitor() -> None:
        warn_expiring(orchestrator.store, expiry_warning)
        orchestrator.expire_due()
        orchestrator.release_networks()

    workers = [
        PeriodicWorker("provisioner", provisioner_interval, orchestrator.run_pending),
        PeriodicWorker("janitor", janitor_interval, janitor),
    ]
    if event_retention is not None:
        workers.append(PeriodicWorker("event-pruner", janitor_interval,
                                      lambda: prune_events(orchestrator.store, event_retention)))
    if audit_retention is not None:
        workers.append(PeriodicWorker("audit-pruner", janitor_interval,
                                      lambda: AuditLog(orchestrator.store).prune(audit_retention)))
    return workers
