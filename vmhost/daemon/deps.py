"""FastAPI dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from vmhost.core.models import Caller
from vmhost.core.orchestrator import Orchestrator


def get_orchestrator(conn: HTTPConnection) -> Orchestrator:
    return conn.app.state.orchestrator


def get_caller(conn: HTTPConnection) -> Caller:
    return conn.app.state.authenticator.caller(conn)


OrchestratorDep = Annotated[Orchestrator, Depends(get_orchestrator)]
CallerDep = Annotated[Caller, Depends(get_caller)]
