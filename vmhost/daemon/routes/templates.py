from __future__ import annotations

from fastapi import APIRouter, Request

from vmhost.core import paging
from vmhost.daemon.deps import CallerDep, OrchestratorDep, in_read_pool
from vmhost.daemon.routes.common import API, CursorQuery, LimitQuery, errors
from vmhost.daemon.schemas import BrokenTemplateOut, TemplateOut, TemplatePage

router = APIRouter(prefix=f"{API}/templates", tags=["templates"])

TEMPLATE_ORDER = paging.Order("templates", {"name": str})


@router.get("", response_model=TemplatePage, summary="List templates", responses=errors())
async def list_templates(request: Request, caller: CallerDep, orchestrator: OrchestratorDep,
                         limit: LimitQuery = paging.DEFAULT_LIMIT, cursor: CursorQuery = None) -> TemplatePage:
    """Built-in templates and those in the templates directory, by name; unreadable files are listed
    in `broken` with why."""
    def read() -> TemplatePage:
        found, broken = orchestrator.templates.load()
        page = TEMPLATE_ORDER.page_of(found.values(), limit, cursor, key=lambda t: (t.name,))
        return TemplatePage(items=[TemplateOut.model_validate(t) for t in page.items], next_cursor=page.next_cursor,
                            broken=[BrokenTemplateOut.model_validate(b) for b in broken])
    return await in_read_pool(request, read)


@router.get("/{name}", response_model=TemplateOut, summary="Get a template", responses=errors(404))
async def get_template(name: str, request: Request, caller: CallerDep, orchestrator: OrchestratorDep) -> TemplateOut:
    return await in_read_pool(request, lambda: TemplateOut.model_validate(orchestrator.templates.get(name)))
