from __future__ import annotations

from fastapi import APIRouter, Request

from vmhost.daemon.deps import CallerDep, OrchestratorDep, in_read_pool
from vmhost.daemon.routes.common import API, errors
from vmhost.daemon.schemas import BrokenTemplateOut, TemplateList, TemplateOut

router = APIRouter(prefix=f"{API}/templates", tags=["templates"])


@router.get("", response_model=TemplateList, summary="List templates", responses=errors())
async def list_templates(request: Request, caller: CallerDep, orchestrator: OrchestratorDep) -> TemplateList:
    """Built-in templates and those in the templates directory; unreadable files are listed with why."""
    def read() -> TemplateList:
        found, broken = orchestrator.templates.load()
        return TemplateList(
            templates=[TemplateOut.model_validate(t) for t in sorted(found.values(), key=lambda t: t.name)],
            broken=[BrokenTemplateOut.model_validate(b) for b in broken])
    return await in_read_pool(request, read)


@router.get("/{name}", response_model=TemplateOut, summary="Get a template", responses=errors(404))
async def get_template(name: str, request: Request, caller: CallerDep, orchestrator: OrchestratorDep) -> TemplateOut:
    return await in_read_pool(request, lambda: TemplateOut.model_validate(orchestrator.templates.get(name)))
