"""The API contract: typed request and response models. FastAPI builds the OpenAPI spec from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vmhost.core import validation
from vmhost.core.models import OperationStatus, Scope, Workspace, WorkspaceStatus

Name = Field(pattern=validation.NAME_PATTERN, min_length=1, max_length=63,
             description="a DNS label: lower-case letters, digits and '-'")


class Problem(BaseModel):
    """Every error answer."""

    detail: str = Field(description="what went wrong, in words a person can act on")
    code: str = Field(description="a stable machine-readable error code")


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Name
    template: str = Field("base", min_length=1, max_length=63)
    ttl_seconds: int | None = Field(None, gt=0, le=validation.MAX_TTL_SECONDS,
                                    description="delete the workspace this many seconds after creation")
    labels: dict[str, str] = Field(default_factory=dict, max_length=validation.MAX_LABELS)
    repo_url: str | None = Field(None, max_length=2048, description="git repository cloned into /workspace")
    branch: str | None = Field(None, max_length=200)
    cpus: float | None = Field(None, ge=0.01, le=1024)
    memory_mb: int | None = Field(None, ge=validation.MIN_MEMORY_MB, le=validation.MAX_MEMORY_MB)
    provision: list[str | list[str]] = Field(default_factory=list, max_length=100,
                                             description="commands run in /workspace after start: a shell line "
                                                         "or an argv list")
    plugins: list[str] = Field(default_factory=list, max_length=100)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)


class Connection(BaseModel):
    container_id: str | None
    container_name: str
    ports: dict[str, str] = Field(description="container port -> host:port")
    shell: str = Field(description="how to open a shell in the workspace")


class WorkspaceOut(BaseModel):
    id: str
    name: str
    owner: str
    template: str
    image: str
    status: WorkspaceStatus
    status_reason: str | None
    repo_url: str | None
    branch: str | None
    cpus: float | None
    memory_mb: int | None
    ttl_seconds: int | None
    expires_at: datetime | None
    labels: dict[str, str]
    env: dict[str, str]
    provision: list[str | list[str]]
    plugins: list[str]
    current_operation_id: str | None
    created_at: datetime
    updated_at: datetime
    connection: Connection

    @classmethod
    def of(cls, ws: Workspace) -> WorkspaceOut:
        return cls(
            **{name: getattr(ws, name) for name in cls.model_fields if name != "connection"},
            connection=Connection(
                container_id=ws.container_id,
                container_name=f"vmhost-{ws.id}",
                ports={k: v for k, v in ws.ports.items() if v},
                shell=f"vmhost ws shell {ws.name}",
            ),
        )


class OperationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    type: str
    status: OperationStatus
    workspace_id: str | None
    workspace_name: str | None
    owner: str
    requested_by: str
    params: dict[str, Any]
    result: dict[str, Any]
    output: str
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class WorkspaceAccepted(BaseModel):
    workspace: WorkspaceOut
    operation: OperationOut


class TemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    description: str
    image: str
    command: list[str]
    env: dict[str, str]
    ports: list[str]
    provision: list[str | list[str]]
    cpus: float | None
    memory_mb: int | None
    shell: str | None
    source: str


class BrokenTemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    source: str
    error: str


class TemplateList(BaseModel):
    templates: list[TemplateOut]
    broken: list[BrokenTemplateOut] = Field(description="template files that could not be read, with why")


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str | None = Field(None, min_length=1, max_length=128, description="default: the caller")
    name: str = Field("", max_length=128)
    scope: Scope = Scope.WRITE
    admin: bool = False
    ttl_seconds: int | None = Field(None, gt=0, le=validation.MAX_TTL_SECONDS)


class TokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    user: str
    name: str
    scope: Scope
    admin: bool
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(BaseModel):
    token: TokenOut
    secret: str = Field(description="the bearer token; shown only this once")


class ComponentHealth(BaseModel):
    ok: bool
    detail: str
    schema_version: int | None = None


class Health(BaseModel):
    status: str = Field(description="ok, or degraded when Docker or the database does not answer")
    docker: ComponentHealth
    database: ComponentHealth
    version: str
