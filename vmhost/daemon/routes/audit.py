"""The audit log, for admins."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from vmhost.core import paging
from vmhost.daemon.deps import AuditDep, CallerDep, in_read_pool
from vmhost.daemon.routes.common import API, CursorQuery, LimitQuery, errors
from vmhost.daemon.schemas import AuditEntryOut, Page
from vmhost.errors import InvalidInput

router = APIRouter(prefix=f"{API}/audit", tags=["audit"])


def _utc(moment: datetime | None, name: str) -> datetime | None:
    if moment is None:
        return None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise InvalidInput(f"{name} {moment.isoformat()} is out of range in UTC") from None


@router.get("", response_model=Page[AuditEntryOut], summary="Read the audit log (admins)", responses=errors(403))
async def read_audit(request: Request, caller: CallerDep, audit: AuditDep,
                     user: Annotated[str | None, Query(description="only this caller")] = None,
                     workspace: Annotated[str | None, Query(description="only this workspace (id or name)")] = None,
                     since: Annotated[datetime | None,
                                      Query(description="from this time (ISO 8601; UTC if no zone)")] = None,
                     until: Annotated[datetime | None, Query(description="up to this time")] = None,
                     limit: LimitQuery = paging.DEFAULT_LIMIT, cursor: CursorQuery = None) -> Page[AuditEntryOut]:
    """Mutating requests, refused requests (401/403) and WebSocket handshakes, newest first: who, through
    which door, from where, what, on which workspace, and the answer. Entries outlive their workspaces."""
    def read() -> Page[AuditEntryOut]:
        entries = audit.search(caller, user=user, workspace=workspace, since=_utc(since, "since"),
                               until=_utc(until, "until"), limit=limit, cursor=cursor)
        return Page[AuditEntryOut].of(entries, AuditEntryOut.model_validate)

    return await in_read_pool(request, read)
