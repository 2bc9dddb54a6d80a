"""Errors to HTTP, in one place: a VmhostError carries its status; validation errors become one
readable sentence; anything unexpected is a 500 that says where to look."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vmhost.core import validation
from vmhost.errors import TooManyRequests, VmhostError

log = logging.getLogger(__name__)

BODY_NOT_PARSED = "There was an error parsing the body"  # FastAPI's words for a body it cannot decode
PATTERN_HINTS = {validation.NAME_PATTERN: validation.NAME_RULE}


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """pydantic's error list as one sentence: 'body.name: String should match pattern ...; ...'."""
    parts = []
    for error in errors:
        where = ".".join(str(p) for p in error.get("loc", ()))
        pattern = (error.get("ctx") or {}).get("pattern")
        if error.get("type") == "json_invalid":
            parts.append(f"malformed JSON body: {error.get('ctx', {}).get('error', error.get('msg'))}")
        elif pattern in PATTERN_HINTS:
            parts.append(f"{where}: invalid value {error.get('input')!r}: {PATTERN_HINTS[pattern]}")
        else:
            parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(VmhostError)
    async def vmhost_error(request: Request, exc: VmhostError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
        return JSONResponse(exc.to_dict(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": describe_validation_errors(exc.errors()), "code": "invalid_input"},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path}"
        if exc.status_code == 400 and detail == BODY_NOT_PARSED:  # e.g. a JSON body that is not UTF-8
            return JSONResponse({"detail": "malformed request body: send JSON (UTF-8)", "code": "invalid_input"},
                                status_code=422)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse({"detail": detail, "code": code}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the daemon's log",
                             "code": "internal_error"}, status_code=500)
