"""The composition root: from Settings to the parts of a running vmhost, each made here and only here.

The daemon (vmhost/daemon/serve.py), `vmhost openapi`, the tests and the benchmarks all build through
`build(settings)`; the engine is an object made here (or handed in, e.g. by a test) and passed on,
never a module-level client. Every default is in vmhost/config.py's Settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from vmhost.config import Settings
from vmhost.core.engines import Engine
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.reconcile import EventFollower, Reconciler
from vmhost.core.store import Store
from vmhost.core.templates import TemplateCatalog
from vmhost.core.workers import PeriodicWorker, Worker, standard_workers

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """What build() made. The daemon hands the orchestrator and the workers to its app (the app's lifespan
    starts and stops the workers and closes the orchestrator); everyone else calls close() when done."""

    settings: Settings
    store: Store
    engine: Engine
    templates: TemplateCatalog
    orchestrator: Orchestrator
    reconciler: Reconciler
    workers: list[Worker] = field(default_factory=list)  # made, not started

    def close(self) -> None:
        """Let running operations end (see Orchestrator.close), then close the database and the engine's
        connections. The workers, when started, are stopped first by whoever started them."""
        try:
            self.orchestrator.close()
        finally:
            try:
                self.store.close()
            finally:
                self.engine.close()


def make_engine(settings: Settings) -> Engine:
    """The engine the settings name: one Docker engine at `docker_host`, or the Swarm cluster it manages."""
    # the SDK is imported only when an engine is made
    from vmhost.core.engines.docker import DockerEngine
    from vmhost.core.engines.docker_connection import TLSFiles

    tls = TLSFiles(settings.docker_tls_ca, settings.docker_tls_cert, settings.docker_tls_key)

    def docker_engine(url: str | None) -> DockerEngine:
        return DockerEngine(url, timeout=settings.docker_timeout, log_max_mb=settings.container_log_max_mb,
                            log_max_files=settings.container_log_max_files, tls=tls)

    if settings.engine == "swarm":
        from vmhost.core.engines.swarm import SwarmEngine

        manager = docker_engine(settings.docker_host)
        return SwarmEngine(manager, docker_engine, stop_timeout=settings.stop_timeout, log_config=manager.log_config)
    return docker_engine(settings.docker_host)


def build(settings: Settings, engine: Engine | None = None) -> Parts:
    """Every part of vmhost over `settings`: the store at `db_path` (migrated), the engine (`engine`, else
    the one the settings name), the templates at `templates_dir`, the orchestrator, the reconciler and
    the background workers (not started). Nothing connects to the engine yet."""
    store = Store(settings.db_path)
    if store.backup_written:
        log.info("database backed up to %s before migrating", store.backup_written)
    engine = engine if engine is not None else make_engine(settings)
    templates = TemplateCatalog(settings.templates_dir)
    orchestrator = Orchestrator(store, engine, templates, settings)
    reconciler = Reconciler(store, engine, orchestrator.instance_labels)
    workers: list[Worker] = [*standard_workers(orchestrator, settings), EventFollower(reconciler),
                             PeriodicWorker("reconciler", settings.reconcile_interval, reconciler.sweep)]
    return Parts(settings=settings, store=store, engine=engine, templates=templates, orchestrator=orchestrator,
                 reconciler=reconciler, workers=workers)
