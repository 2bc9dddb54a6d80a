from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

import vmhost
from vmhost.daemon.deps import OrchestratorDep
from vmhost.daemon.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Is the daemon well?",
            responses={503: {"model": Health, "description": "Docker or the database does not answer"}},
            openapi_extra={"security": []}, name="check_health")
def health(orchestrator: OrchestratorDep) -> JSONResponse:
    """No authentication. 200 when Docker and the database answer, 503 (same body) when one does not."""
    report = Health(**orchestrator.health(), version=vmhost.__version__)
    return JSONResponse(report.model_dump(mode="json"), status_code=200 if report.status == "ok" else 503)
