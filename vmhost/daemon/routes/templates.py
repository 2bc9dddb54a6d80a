from __future__ import annotations

from fastapi import APIRouter

from vmhost.daemon.deps import CallerDep, OrchestratorDep
from vmhost.daemon.routes.common import API, errors
from vmhost.daemon.schemas import BrokenTemplateOut, TemplateList, TemplateOut

router = APIRouter(prefix=f"{API}/templates", tags=["templates"])


@router.get("", response_model=TemplateList, summary="List templates", responses=errors())
def list_templates(caller: CallerDep, orchestrator: OrchestratorDep) -> TemplateList:
    """Built-in templates and those in the templates directory; unreadable files are listed with why."""
    found, broken = orchestrator.templates.load()
    return TemplateList(templates=[TemplateOut.model_validate(t) for t in sorted(found.values(), key=lambda t: t.name)],
                        broken=[BrokenTemplateOut.model_validate(b) for b in broken])


@router.get("/{name}", response_model=TemplateOut, summary="Get a template", responses=errors(404))
def get_template(name: str, caller: CallerDep, orchestrator: OrchestratorDep) -> TemplateOut:
    return TemplateOut.model_validate(orchestrator.templates.get(name))
