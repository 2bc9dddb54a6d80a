"""Small helpers shared by routers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Response

from vmhost.core import paging
from vmhost.daemon.schemas import Problem

API = "/api/v1"

LIMIT_DESCRIPTION = f"at most this many items ({paging.DEFAULT_LIMIT} unless given)"
CURSOR_DESCRIPTION = "the `next_cursor` of the previous page, with the same filters; none for the first page"
LimitQuery = Annotated[int, Query(ge=1, le=paging.MAX_LIMIT, description=LIMIT_DESCRIPTION)]
CursorQuery = Annotated[str | None, Query(description=CURSOR_DESCRIPTION)]


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the error answers an endpoint can give."""
    meaning = {400: "Bad request", 401: "Not authenticated", 403: "Forbidden", 404: "Not found",
               409: "Conflict with an operation in flight or an existing name", 413: "Request body too large",
               422: "Invalid input",
               429: "The caller already holds as many sessions of this kind as a user may; try again after "
                    "`Retry-After` seconds",
               502: "Docker refused the request", 503: "Docker or the database is unavailable",
               504: "The workspace's server did not answer in time"}
    return {s: {"model": Problem, "description": meaning.get(s, "Error")} for s in (401, 422, *statuses)}


def locate_operation(response: Response, operation_id: str) -> None:
    response.headers["Location"] = f"{API}/operations/{operation_id}"
