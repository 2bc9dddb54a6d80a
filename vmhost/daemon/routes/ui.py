"""The web page: static files shipped inside the package, served without authentication (the page holds
no data; its API calls are authenticated like any other)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from vmhost.errors import NotFound

STATIC = Path(__file__).resolve().parent.parent / "static"

# The page talks to its own origin only. xterm.js writes its theme into <style> elements it creates,
# so inline styles are allowed; scripts are not.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

router = APIRouter(tags=["web page"], include_in_schema=False)


def static_file(relative: str) -> FileResponse:
    path = (STATIC / relative).resolve()
    if not path.is_relative_to(STATIC) or not path.is_file():
        raise NotFound(f"no such file: {relative}")
    return FileResponse(path, headers=HEADERS)


@router.get("/")
@router.get("/ui")
def page() -> FileResponse:
    return static_file("index.html")


@router.get("/static/{relative:path}")
def asset(relative: str) -> FileResponse:
    return static_file(relative)
