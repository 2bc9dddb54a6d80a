"""Background workers: each calls the orchestrator on an interval, like any other client would."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from vmhost.config import Settings
from vmhost.core.activity import FLUSH_INTERVAL
from vmhost.core.audit import AuditLog
from vmhost.core.events import prune_events, warn_expiring
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.pools import POOL_INTERVAL
from vmhost.core.scheduler import SCHEDULE_INTERVAL

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A background worker: started and stopped with the daemon (see vmhost/core/build.py)."""

    name: str

    def start(self) -> None: ...
    def stop(self, timeout: float = 10) -> None: ...


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


NODE_WATCH_INTERVAL = 5.0  # seconds: with Swarm's own heartbeat, a node's loss shows within 30 s


def standard_workers(orchestrator: Orchestrator, settings: Settings) -> list[PeriodicWorker]:
    """The provisioner (picks up queued operations), the janitor (warns about workspaces close to their
    expiry, expires those past it, warns about and stops idle workspaces, removes networks no container
    is on), the scheduler (autostarts and autostops, every SCHEDULE_INTERVAL seconds or the janitor's
    interval if shorter), the event and audit pruners, on the settings' intervals and retentions, the
    writer of the recorded activity (every FLUSH_INTERVAL seconds; the orchestrator's close() writes it
    once more), and the warm pools' refill (every POOL_INTERVAL seconds; not on Swarm)."""
    def janitor() -> None:
        warn_expiring(orchestrator.store, settings.expiry_warning)
        orchestrator.expire_due()
        orchestrator.stop_idle()
        orchestrator.release_networks()

    return [
        PeriodicWorker("provisioner", settings.provisioner_interval, orchestrator.run_pending),
        PeriodicWorker("janitor", settings.janitor_interval, janitor),
        PeriodicWorker("scheduler", min(SCHEDULE_INTERVAL, settings.janitor_interval), orchestrator.run_schedules),
        PeriodicWorker("event-pruner", settings.janitor_interval,
                       lambda: prune_events(orchestrator.store, settings.event_retention)),
        PeriodicWorker("audit-pruner", settings.janitor_interval,
                       lambda: AuditLog(orchestrator.store).prune(settings.audit_retention)),
        PeriodicWorker("activity", FLUSH_INTERVAL, orchestrator.activity.flush),
        *([PeriodicWorker("node-watch", NODE_WATCH_INTERVAL, orchestrator.node_watch.sweep)]
          if settings.engine == "swarm" else []),
        *([PeriodicWorker("pool-refill", POOL_INTERVAL, orchestrator.pools.refill)]
          if orchestrator.pools.enabled else []),
    ]
