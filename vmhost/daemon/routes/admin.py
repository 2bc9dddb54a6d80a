"""Operators' endpoints: doctor, orphaned Docker objects, online database backup, Prometheus metrics."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from prometheus_client.exposition import choose_encoder
from starlette.background import BackgroundTask

from vmhost.core import doctor, paging
from vmhost.core.backup import online_backup
from vmhost.core.orchestrator import Orchestrator
from vmhost.core.reconcile import Reconciler
from vmhost.daemon.deps import CallerDep, MetricsDep, OrchestratorDep, SettingsDep
from vmhost.daemon.routes.common import API, CursorQuery, LimitQuery, errors
from vmhost.daemon.schemas import DoctorCheck, Orphan, Page

router = APIRouter(tags=["admin"])

ORPHAN_ORDER = paging.Order("orphans", {"kind": str, "id": str})


def reconciler_of(orchestrator: Orchestrator) -> Reconciler:
    return Reconciler(orchestrator.store, orchestrator.engine, orchestrator.instance_labels)


@router.get(f"{API}/doctor", response_model=list[DoctorCheck], summary="Check the daemon's health in depth",
            responses=errors(403))
def run_doctor(caller: CallerDep, orchestrator: OrchestratorDep, settings: SettingsDep) -> list[DoctorCheck]:
    """Admins only. Docker, the database (integrity and schema version), each template's image, free
    disk, orphaned Docker objects and the SSH server (its host key's fingerprint), each passed or failed
    with a hint. Always 200: read `ok`."""
    caller.require_admin("may run the doctor")
    checks = doctor.run_checks(orchestrator.store, orchestrator.templates, reconciler_of(orchestrator))
    checks.append(doctor.check_ssh(settings))
    return [DoctorCheck.model_validate(c) for c in checks]


@router.get(f"{API}/orphans", response_model=Page[Orphan], summary="List orphaned Docker objects",
            responses=errors(403, 503))
def list_orphans(caller: CallerDep, orchestrator: OrchestratorDep, limit: LimitQuery = paging.DEFAULT_LIMIT,
                 cursor: CursorQuery = None) -> Page[Orphan]:
    """Admins only. Containers, volumes and images with this daemon's labels whose workspace is not in
    the database (left behind by a crash, or by a database restored from an older backup), by kind
    and id. Docker is asked again for each page."""
    caller.require_admin("may list orphaned Docker objects")
    page = ORPHAN_ORDER.page_of(reconciler_of(orchestrator).orphans(), limit, cursor, key=lambda o: (o.kind, o.id))
    return Page[Orphan].of(page, Orphan.model_validate)


@router.delete(f"{API}/orphans", response_model=list[Orphan], summary="Remove orphaned Docker objects",
               responses=errors(403, 502, 503))
def remove_orphans(caller: CallerDep, orchestrator: OrchestratorDep) -> list[Orphan]:
    """Admins only. Removes the orphans found at the time of the call and lists what was removed."""
    caller.require_admin("may remove orphaned Docker objects")
    caller.require_write()
    return [Orphan.model_validate(o) for o in reconciler_of(orchestrator).remove_orphans()]


@router.get(f"{API}/admin/backup", summary="Download a consistent copy of the database",
            response_class=FileResponse,
            responses={200: {"description": "the database, a SQLite 3 file (named `vmhost.db` in "
                                            "`Content-Disposition`)",
                             "content": {"application/vnd.sqlite3": {"schema": {"type": "string",
                                                                                "format": "binary"}}}},
                       **errors(403)}, name="backup_database")
def backup(caller: CallerDep, orchestrator: OrchestratorDep) -> FileResponse:
    """Admins only. An online backup (SQLite's backup API) taken while the daemon keeps serving,
    streamed to the caller, who writes it wherever they may: the daemon writes nothing but a
    temporary copy next to its database."""
    caller.require_admin("may back up the database")
    db_path: Path = orchestrator.store.path
    handle, name = tempfile.mkstemp(prefix=".vmhost-backup-", suffix=".db", dir=db_path.parent)
    os.close(handle)
    try:
        online_backup(db_path, Path(name))
    except BaseException:
        os.unlink(name)
        raise
    return FileResponse(name, media_type="application/vnd.sqlite3", filename="vmhost.db",
                        background=BackgroundTask(os.unlink, name))


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"description": "Prometheus' text format, or OpenMetrics when `Accept` asks for it",
                             "content": {"text/plain": {"schema": {"type": "string"}},
                                         "application/openmetrics-text": {"schema": {"type": "string"}}}},
                       **errors(403)})
def read_metrics(request: Request, caller: CallerDep, metrics: MetricsDep) -> Response:
    """Admins only (give Prometheus an admin token with read scope). Workspaces by status, operations
    by type and result with durations, HTTP requests by route and status, background worker runs."""
    caller.require_admin("may read the metrics")
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(metrics.registry), headers={"Content-Type": content_type})
