"""The API contract: typed request and response models. FastAPI builds the OpenAPI spec from them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from vmhost.core import commands, paging, validation
from vmhost.core.models import Door, OperationStatus, Scope, Sharing, SnapshotStatus, Workspace, WorkspaceStatus
from vmhost.core.nodes import Node

REQUEST = ConfigDict(extra="forbid", strict=True)
"""Request bodies take JSON's own types only: no `true` for 1, no "5" for 5 (a float field still takes 5)."""

Name = Field(pattern=validation.NAME_PATTERN, min_length=1, max_length=63,
             description="a DNS label: lower-case letters, digits and '-'")


class Problem(BaseModel):
    """Every error answer."""

    detail: str = Field(description="what went wrong, in words a person can act on")
    code: str = Field(description="a stable machine-readable error code")


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """Every collection's answer: a page of at most `limit` items, in the collection's order."""

    items: list[ItemT]
    next_cursor: str | None = Field(description="more items follow: pass this as `cursor`, with the same filters, "
                                                "for the next page; null on the last page")

    @classmethod
    def of(cls, page: paging.Page[Any], convert: Callable[[Any], ItemT]) -> Self:
        return cls(items=[convert(item) for item in page.items], next_cursor=page.next_cursor)


class WorkspaceCreate(BaseModel):
    model_config = REQUEST

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
    devcontainer: bool = Field(False, description="apply the repository's devcontainer.json (needs `repo_url`; also "
                                                  "when the template says so): see README, devcontainer.json")


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
    idle_timeout_seconds: int | None = Field(description="a running workspace is stopped after this long without "
                                                         "activity; null: never")
    last_activity_at: datetime | None = Field(
        description="the last activity its idle stop counts: an action on it through the API, a command, the end "
                    "of a shell or event stream on it (now while one is open); while it runs, also the change of "
                    "status that made it run and the daemon's start")
    idle_stop_at: datetime | None = Field(description="when it will be stopped for being idle if nothing happens "
                                                      "on it before; null when it is not running or has no idle "
                                                      "timeout")
    node: str | None = Field(description="the id of the node it runs on (see GET /api/v1/nodes): `local` on one "
                                         "Docker engine; null before its container is made")
    autostart: str | None = Field(description="when it is started: `[DAYS] HH:MM ZONE`, e.g. `mon-fri 08:30 "
                                              "Europe/Berlin` (days left out: every day); null: never")
    autostop: str | None = Field(description="when it is stopped, written like `autostart` (always with its "
                                             "zone); null: never")
    next_autostart_at: datetime | None = Field(description="the next time its autostart is due")
    next_autostop_at: datetime | None = Field(description="the next time its autostop is due")
    devcontainer: bool = Field(description="made from its repository's devcontainer.json (read again at each "
                                           "rebuild)")
    workdir: str = Field(description="where commands, shells and provisioning start")
    user: str | None = Field(description="what the container and its commands run as; null: the image's user")
    post_start: list[str | list[str]] = Field(description="the devcontainer.json's postStartCommand: run at each "
                                                          "start")
    post_attach: list[str | list[str]] = Field(description="the devcontainer.json's postAttachCommand: run in each "
                                                           "terminal (shell, SSH session) before its shell")
    port_labels: dict[str, str] = Field(description="a name for a port (the devcontainer.json's portsAttributes)")
    display_name: str | None = Field(description="the devcontainer.json's `name`")
    sources: dict[str, str] = Field(
        description="where each setting came from (`template`, `devcontainer` or `request`): `image`, `workdir`, "
                    "`user`, `env.NAME`, `provision.N` (its place in `provision`), `ports.PORT`")
    connection: Connection

    @classmethod
    def of(cls, ws: Workspace) -> WorkspaceOut:
        return cls(
            **{name: getattr(ws, name) for name in cls.model_fields if name not in ("connection", "workdir")},
            workdir=ws.start_dir,
            connection=Connection(
                container_id=ws.container_id,
                container_name=f"vmhost-{ws.id}",
                ports={k: v for k, v in ws.ports.items() if v},
                shell=f"vmhost ws shell {ws.name}",
            ),
        )


class PortOut(BaseModel):
    port: int
    listening: bool = Field(description="something in the workspace listens on it now (on an address other "
                                        "than loopback)")
    in_template: bool = Field(description="the workspace's template (or devcontainer.json's forwardPorts) names it")
    label: str | None = Field(description="its name in the devcontainer.json's portsAttributes; null: none")
    sharing: Sharing = Field(description="`private`: the owner and admins; `authenticated`: any vmhost user may "
                                         "open a tunnel to it or use its preview")
    preview_url: str = Field(description="where the port's HTTP preview is: any request under it is forwarded to "
                                         "the port's server (a browser gets a cookie for it from POST "
                                         "`.../preview-session`). A path on the daemon, or with `preview_domain` "
                                         "set a URL on the port's own host `{port}--{workspace}--{owner}."
                                         "{preview_domain}`")
    tunnel_url: str = Field(description="the path of the WebSocket that tunnels TCP to the port")


class PreviewSessionOut(BaseModel):
    url: str = Field(description="what a browser opens: the preview's path, whose cookie this answer set; or with "
                                 "`preview_domain`, a link on the preview's own host that sets that host's cookie "
                                 "(usable once, within a minute) and goes on to its `/`")


class PortSharingIn(BaseModel):
    model_config = REQUEST

    level: Sharing = Field(strict=False, description="`private` (the owner and admins) or `authenticated` (any "
                                                     "vmhost user may open a tunnel to it)")


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
    idle_timeout_seconds: int | None = Field(description="its workspaces are stopped after this long without "
                                                         "activity (the template's `idle_timeout`); null: never")
    pool_size: int = Field(description="how many of its workspaces the daemon keeps created, started and "
                                       "provisioned for creates to claim (see GET /api/v1/pools); 0: no pool")
    devcontainer: bool = Field(description="its workspaces apply their repository's devcontainer.json")
    source: str


class BrokenTemplateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    source: str
    error: str


class TemplatePage(Page[TemplateOut]):
    broken: list[BrokenTemplateOut] = Field(description="template files that could not be read, with why (the "
                                                        "same on every page)")


class TokenCreate(BaseModel):
    model_config = REQUEST

    user: str | None = Field(None, min_length=1, max_length=128, description="default: the caller")
    name: str = Field("", max_length=128)
    scope: Scope = Field(Scope.WRITE, strict=False)  # from JSON an enum is its value, a string
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


class SshKeyCreate(BaseModel):
    model_config = REQUEST

    public_key: str = Field(max_length=16 * 1024,
                            description="one public key in OpenSSH form, e.g. the contents of ~/.ssh/id_ed25519.pub")
    user: str | None = Field(None, min_length=1, max_length=128, description="default: the caller (admins only)")
    admin: bool = Field(False, description="an admin key, which may open any user's workspace as USER/WORKSPACE "
                                           "(admins only)")


class SshKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    user: str
    public_key: str
    fingerprint: str
    comment: str
    admin: bool
    created_at: datetime


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


class DoctorCheck(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str = Field(description="what was checked, e.g. docker, database, template base")
    ok: bool
    detail: str
    hint: str = Field("", description="what to do about a failure")


class NodeOut(BaseModel):
    id: str = Field(description="Swarm's node id; `local` for the one Docker engine")
    hostname: str
    address: str
    state: str = Field(description="ready, down, drain (ready but taking no workspaces), unknown or disconnected")
    manager: bool
    engine_url: str = Field(description="where vmhost reaches the node's own engine (its vmhost.engine label); "
                                        "empty: not named yet")
    cpus: int
    memory_mb: int
    cpus_reserved: float = Field(description="CPUs the workspaces running on it reserve")
    memory_mb_reserved: int = Field(description="memory the workspaces running on it reserve")
    workspaces: int = Field(description="workspaces placed on it, running or not")

    @classmethod
    def of(cls, node: Node) -> NodeOut:
        return cls(**vars(node.info), workspaces=node.workspaces)


class PoolOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    template: str
    size: int = Field(description="how many workspaces the pool keeps ready (the template's pool_size; 0 on a "
                                  "Swarm cluster, which has no pools)")
    ready: int = Field(description="running and provisioned, waiting for a create to claim them")
    filling: int = Field(description="being created and provisioned")
    failed: int = Field(description="whose create failed; each is replaced a minute after it failed")


class NodeEngineIn(BaseModel):
    url: str = Field(min_length=1, max_length=1000,
                     description="the node's engine: unix:///path, tcp://host:port (with the docker_tls_* settings) "
                                 "or ssh://user@host")


class Orphan(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: str = Field(description="container, volume or image")
    id: str
    name: str
    workspace_id: str = Field(description="the workspace (no longer in the database) its labels name")


class EventOut(BaseModel):
    id: int = Field(description="strictly increasing; pass the last one seen as `since` to resume")
    type: str = Field(description="workspace.created, workspace.status, workspace.updated, workspace.deleted, "
                                  "workspace.expiring, workspace.idle, operation.status, operation.output")
    time: str = Field(description="ISO 8601 in UTC, as in the WebSocket frames")
    workspace_id: str | None
    owner: str | None
    payload: dict[str, Any]


class EventGap(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    type: str = "gap"
    first: int = Field(alias="from", description="first pruned id the caller asked for")
    to: int = Field(description="last pruned id")
    detail: str


class EventPage(Page[EventOut]):
    last_id: int = Field(description="pass as `since` on the next poll, once `next_cursor` is null")
    gap: EventGap | None = Field(None, description="set when events after `since` were pruned before this poll")


class QuotaLimits(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    max_workspaces: int = Field(description="workspaces the user may have")
    max_cpus: float = Field(description="CPUs the user's workspaces may ask for in total")
    max_memory_mb: int = Field(description="MB of memory the user's workspaces may ask for in total")
    max_ttl_seconds: int = Field(description="longest TTL; a workspace created without a TTL gets this one")
    max_snapshots: int = Field(description="snapshots the user may keep per workspace")
    max_pids: int = Field(description="processes and threads the user's workspaces may run in total; each "
                                      "container may run max_pids / max_workspaces")
    max_snapshot_bytes: int = Field(description="bytes the user's snapshots may take on disk in total")
    max_idle_timeout_seconds: int = Field(description="longest idle timeout of a workspace, also the one of a "
                                                      "workspace without; 0: no maximum")


class QuotaOverrides(BaseModel):
    """A user's own limits; a limit left out or null is the configured default."""

    model_config = REQUEST

    max_workspaces: int | None = Field(None, ge=0, le=1_000_000)
    max_cpus: float | None = Field(None, ge=0, le=1_000_000)
    max_memory_mb: int | None = Field(None, ge=0, le=1_000_000_000)
    max_ttl_seconds: int | None = Field(None, gt=0, le=validation.MAX_TTL_SECONDS)
    max_snapshots: int | None = Field(None, ge=0, le=1_000_000)
    max_pids: int | None = Field(None, ge=1, le=4_194_304)
    max_snapshot_bytes: int | None = Field(None, ge=0, le=2 ** 62)
    max_idle_timeout_seconds: int | None = Field(None, ge=0, le=validation.MAX_IDLE_TIMEOUT_SECONDS)


class QuotaUsage(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    workspaces: int
    cpus: float = Field(description="workspaces without cpus count as the template's, else the configured default")
    memory_mb: int = Field(description="likewise for memory_mb")
    snapshot_bytes: int = Field(description="bytes the user's snapshots take (images and volume archives)")


class QuotaOut(BaseModel):
    user: str
    exempt: bool = Field(description="true when the caller is an admin: no quota applies to admins")
    limits: QuotaLimits = Field(description="what applies: the user's overrides over the defaults")
    overrides: QuotaOverrides
    usage: QuotaUsage


class Me(BaseModel):
    user: str
    role: Literal["admin", "user"]
    door: Door = Field(description="socket, token or proxy")
    scope: Scope = Field(description="read: only GET requests; write: everything the role allows")
    address: str | None = Field(description="'unix' on the socket, else the peer's address")
    email: str | None = Field(description="from the auth proxy, when it sends one")
    token_id: str | None = Field(description="the API token used, if any")
    quota: QuotaOut


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    time: datetime
    user: str | None = Field(description="null when the caller could not be identified (a 401)")
    door: str = Field(description="socket, token, proxy, or how an unidentified caller tried (anonymous)")
    address: str | None = Field(description="unix:uid=..,pid=.. on the socket, else the peer's IP address")
    forwarded_for: str | None = Field(None, description="the client's address as a trusted proxy forwarded it "
                                                        "(X-Forwarded-For); null from anyone else")
    method: str = Field(description="HTTP method, WS for a WebSocket handshake, or JANITOR for the daemon's own "
                                    "action (an idle stop)")
    path: str
    action: str | None = Field(description="the endpoint (and lifecycle action) that handled it")
    workspace_id: str | None
    workspace_name: str | None
    status: int = Field(description="HTTP status of the answer (101 for an accepted WebSocket)")
    code: str | None = Field(description="the error code of a refused or failed request")
    phase: str | None = Field(None, description="for a long-lived session (a WebSocket, a streamed answer): "
                                                "'start' when it began, 'end' when it ended; null otherwise")


class WorkspaceEdit(BaseModel):
    """Only the fields given change."""

    model_config = REQUEST

    name: str | None = Field(None, pattern=validation.NAME_PATTERN, min_length=1, max_length=63,
                             description="a new name, unique among the owner's workspaces")
    ttl_seconds: int | None = Field(None, gt=0, le=validation.MAX_TTL_SECONDS,
                                    description="expire this many seconds from now; null removes the expiry")
    labels: dict[str, str] | None = Field(None, max_length=validation.MAX_LABELS,
                                          description="labels to add or overwrite")
    remove_labels: list[str] | None = Field(None, max_length=validation.MAX_LABELS,
                                            description="keys of labels to remove (absent ones are ignored)")
    plugins: list[str] | None = Field(None, max_length=100, description="the new list of plugin ids")
    idle_timeout_seconds: int | None = Field(None, ge=0, le=validation.MAX_IDLE_TIMEOUT_SECONDS,
                                             description="stop the workspace after this long without activity; "
                                                         "0 or null: never (with a longest idle timeout in the "
                                                         "quota: that one)")
    autostart: str | None = Field(None, max_length=100,
                                  description="start it on these days at this time of day in this IANA zone: "
                                              "`[DAYS] HH:MM [ZONE]`, e.g. `mon-fri 08:30 Europe/Berlin`; days "
                                              "are mon..sun, ranges (mon-fri) or lists (mon,wed), every day when "
                                              "left out; the zone is UTC when left out; null or \"\" clears it")
    autostop: str | None = Field(None, max_length=100,
                                 description="stop it at this time of day, written like `autostart` (e.g. "
                                             "`19:00`); without a zone, the autostart's zone (else UTC); null or "
                                             "\"\" clears it")


class WorkspaceExtend(BaseModel):
    model_config = REQUEST

    seconds: int = Field(gt=0, le=validation.MAX_TTL_SECONDS, description="push the expiry this much further out")


class CommandRun(BaseModel):
    model_config = REQUEST

    argv: list[str] = Field(min_length=1, max_length=commands.MAX_ARGS,
                            description="the program and its arguments; never run through a shell")
    env: dict[str, str] = Field(default_factory=dict, max_length=256, description="added to the container's")
    workdir: str | None = Field(None, max_length=4096, description="default: the workspace's own (its "
                                "devcontainer.json's workspaceFolder, else /workspace)")
    timeout_seconds: float = Field(commands.DEFAULT_TIMEOUT, gt=0, le=commands.MAX_TIMEOUT,
                                   description="then the command is killed with every process it started")
    stdin: str | None = Field(None, description="written to the command's standard input, which is then closed")
    stream: bool = Field(False, description="answer the output as newline-delimited JSON while the command runs, "
                                            "instead of a 202 with an exec operation")


class CommandOutput(BaseModel):
    """A line of a streamed command: a chunk of output as the command wrote it."""

    stream: Literal["stdout", "stderr"]
    data: str


class CommandEnd(BaseModel):
    """The last line of a streamed command (also in an exec operation's result, with `stdout`,
    `stderr` and `truncated`)."""

    exit_code: int = Field(description="137 when killed, 127 when the program does not exist, 126 when it cannot "
                                       "start, 125 when Docker could not run it")
    timed_out: bool
    cancelled: bool
    error: str | None = Field(None, description="why the command could not run, when it could not")


class SnapshotCreate(BaseModel):
    model_config = REQUEST

    name: str = Field(pattern=validation.NAME_PATTERN, min_length=1, max_length=63,
                      description="unique among the workspace's snapshots; a DNS label")


class SnapshotOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    workspace_id: str
    name: str
    owner: str
    status: SnapshotStatus = Field(description="creating until its operation succeeds, then ready")
    image: str = Field(description="the Docker image holding the container's filesystem")
    size_bytes: int = Field(description="image_bytes + volume_bytes")
    image_bytes: int = Field(description="what the committed image adds on top of the workspace's image")
    volume_bytes: int = Field(description="size of the /workspace archive")
    operation_id: str | None = Field(description="the operation that took it")
    created_at: datetime


class SnapshotAccepted(BaseModel):
    snapshot: SnapshotOut
    operation: OperationOut


class SnapshotRestore(BaseModel):
    model_config = REQUEST

    as_new: str | None = Field(None, pattern=validation.NAME_PATTERN, min_length=1, max_length=63,
                               description="restore into a new workspace of the caller's with this name, leaving "
                                           "the original alone; without it the workspace is restored in place")


class FileStat(BaseModel):
    path: str = Field(description="the normalised absolute path in the container")
    kind: Literal["file", "directory", "symlink", "other"]
    size: int
    mode: int = Field(description="permission bits, e.g. 420 for 0644")
    modified: str = Field(description="modification time as Docker reports it (RFC 3339)")
    link_target: str = Field(description="the path a symlink leads to, made absolute; empty otherwise")


class FilesUploaded(BaseModel):
    path: str = Field(description="the file written, or the directory the archive was extracted into")
    entries: int = Field(description="how many files, directories and links were written")
