from __future__ import annotations

import tempfile
from typing import Annotated, Any
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from vmhost.daemon.deps import CallerDep, OrchestratorDep, SettingsDep
from vmhost.daemon.limits import BodyLimit
from vmhost.daemon.routes.common import API, errors
from vmhost.daemon.schemas import FileStat, FilesUploaded
from vmhost.errors import PayloadTooLarge

router = APIRouter(prefix=f"{API}/workspaces/{{ref}}/files", tags=["files"])

UPLOAD_PATH = rf"{API}/workspaces/[^/]+/files"
"""Requests to this path may carry up to `max_upload_bytes` rather than `max_body_bytes`."""

TAR = "application/x-tar"
RAW = "application/octet-stream"
SPOOL_IN_MEMORY = 1024 * 1024
_BINARY = {"schema": {"type": "string", "format": "binary"}}

PathQuery = Annotated[str, Query(min_length=1, max_length=4096,
                                 description="a path in the container; relative paths start in /workspace")]


def _binary(description: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"description": description, "content": {RAW: _BINARY, TAR: _BINARY}}}


@router.get("", summary="Download a file, or a directory as a tar archive", response_class=StreamingResponse,
            responses={**_binary("a regular file's content (application/octet-stream), or a tar archive of a "
                                 "directory or link (application/x-tar), like `docker cp`"),
                       **errors(404, 409, 502, 503)}, name="download_files")
def download(ref: str, path: PathQuery, caller: CallerDep, orchestrator: OrchestratorDep) -> StreamingResponse:
    """Works on running and stopped workspaces. A link is archived as the link, not followed."""
    found = orchestrator.files.download(caller, ref, path)
    if not found.is_file:
        return StreamingResponse(found.chunks, media_type=TAR)
    name = quote(found.path.rsplit("/", 1)[-1])
    return StreamingResponse(found.chunks, media_type=RAW,
                             headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"})


@router.get("/stat", response_model=FileStat, summary="Look at a path without downloading it",
            responses=errors(404, 409, 502, 503), name="stat_file")
def stat(ref: str, path: PathQuery, caller: CallerDep, orchestrator: OrchestratorDep) -> FileStat:
    where, found = orchestrator.files.stat(caller, ref, path)
    return FileStat(path=where, kind=found.kind, size=found.size, mode=found.mode & 0o7777, modified=found.mtime,
                    link_target=found.link_target)


@router.put("", response_model=FilesUploaded, summary="Upload a file, or a tar archive extracted at a path",
            responses=errors(403, 404, 409, 413, 502, 503),
            openapi_extra={"requestBody": {"required": True, "content": {RAW: _BINARY, TAR: _BINARY}}},
            name="upload_files")
async def upload(ref: str, path: PathQuery, request: Request, caller: CallerDep, orchestrator: OrchestratorDep,
                 settings: SettingsDep) -> FilesUploaded:
    """With `Content-Type: application/x-tar` the body is a tar archive (plain or compressed) extracted
    into the directory `path`, which is made when missing; members with absolute names, `..`, links
    pointing outside `path` (also through other links in the archive) or device files are refused.
    Any other body is written to the file `path` (mode 0644), making missing parent directories.
    Bodies may be as large as `max_upload_bytes`, and so may an archive once decompressed (else 413)."""
    limit = settings.max_upload_bytes
    is_tar = request.headers.get("content-type", "").split(";")[0].strip().lower() == TAR
    with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as body, \
            tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(BodyLimit.message(limit))
            body.write(chunk)
        body.seek(0)
        done = await anyio.to_thread.run_sync(orchestrator.files.upload, caller, ref, path, body, size, is_tar, spool,
                                              limit)
    return FilesUploaded(path=done.path, entries=done.entries)
