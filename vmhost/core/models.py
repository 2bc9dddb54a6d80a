"""The domain: workspaces, operations, templates, tokens, events, and who is calling."""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from vmhost.core import schedules
from vmhost.errors import Forbidden, InvalidState


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str, nbytes: int = 6) -> str:
    """A new random id such as ws_3f2a9c1b7e04."""
    return f"{prefix}_{secrets.token_hex(nbytes)}"


class WorkspaceStatus(enum.StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"
    DELETING = "deleting"
    UNREACHABLE = "unreachable"  # its node is down: nothing can be done on it until the node is back


class OperationStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (OperationStatus.SUCCEEDED, OperationStatus.FAILED)


class OperationType(enum.StrEnum):
    CREATE = "create"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    DELETE = "delete"
    EXPIRE = "expire"
    SNAPSHOT = "snapshot"
    RESTORE = "restore"
    REBUILD = "rebuild"
    EXEC = "exec"
    IDLE_STOP = "idle_stop"  # the janitor's stop of a workspace nobody used for its idle timeout
    AUTOSTART = "autostart"  # the scheduler's start at the workspace's autostart time
    AUTOSTOP = "autostop"  # the scheduler's stop at the workspace's autostop time
    JOIN_NETWORK = "join_network"  # a workspace claimed from a warm pool moves to its owner's network
    DRAIN = "drain"  # a node's workspaces moved to other nodes (acts on no workspace)


class Door(enum.StrEnum):
    """How a caller reached the daemon."""

    SOCKET = "socket"
    TOKEN = "token"
    PROXY = "proxy"
    SSH = "ssh"
    INTERNAL = "internal"


class Scope(enum.StrEnum):
    READ = "read"
    WRITE = "write"


class Sharing(enum.StrEnum):
    """Who may reach a workspace's port."""

    PRIVATE = "private"  # the owner and admins
    AUTHENTICATED = "authenticated"  # also any vmhost user, through a tunnel


@dataclass(frozen=True)
class Caller:
    """Who is calling, and the one place that says what they may do: a user sees and changes their own
    workspaces, an admin everyone's, with no quota; a read-only token changes nothing."""

    user: str
    admin: bool = False
    door: Door = Door.INTERNAL
    address: str | None = None
    scope: Scope = Scope.WRITE
    token_id: str | None = None
    email: str | None = None

    @property
    def sees_everyone(self) -> bool:
        """Whether this caller sees what every user owns, not only their own."""
        return self.admin

    def can_see(self, owner: str) -> bool:
        return self.sees_everyone or self.user == owner

    @property
    def owner_filter(self) -> str | None:
        """The owner whose things a listing shows this caller: None (everyone's) for an admin."""
        return None if self.sees_everyone else self.user

    @property
    def exempt_from_quotas(self) -> bool:
        return self.admin

    @property
    def may_clone_from_host(self) -> bool:
        """Whether a clone for this caller may read the host's disk and reach the host's own network (the
        clone runs on the host; see vmhost.core.clone)."""
        return self.admin

    def require_write(self, doing: str | None = None) -> None:
        """Refuse a read-only token, saying what it tried to do when `doing` is given."""
        if self.scope != Scope.WRITE:
            raise Forbidden("this token is read-only" + (f": it may not {doing}" if doing else ""))

    def require_admin(self, doing: str) -> None:
        """Refuse anyone but an admin, with the message "only admins " + `doing` ("set quotas")."""
        if not self.admin:
            raise Forbidden(f"only admins {doing}")


SYSTEM = Caller(user="vmhost", admin=True, door=Door.INTERNAL)
POOL_OWNER = ":pool"  # who owns the warm pools' workspaces (vmhost.core.pools): no user name starts with a colon


@dataclass
class Workspace:
    id: str
    name: str
    owner: str
    template: str
    image: str
    status: WorkspaceStatus
    created_at: datetime
    updated_at: datetime
    status_reason: str | None = None
    container_id: str | None = None
    volume: str | None = None
    repo_url: str | None = None
    branch: str | None = None
    cpus: float | None = None
    memory_mb: int | None = None
    ttl_seconds: int | None = None
    expires_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    provision: list[str | list[str]] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    ports: dict[str, str] = field(default_factory=dict)
    shell: str | None = None
    current_operation_id: str | None = None
    capabilities: list[str] = field(default_factory=list)
    idle_timeout_seconds: int | None = None  # stopped after this long without activity; None: never
    last_activity_at: datetime | None = None  # see vmhost.core.activity: the last activity the idle stop counts
    node: str | None = None  # the engine's node it runs on (see Engine.nodes)
    autostart: str | None = None  # see vmhost.core.schedules: e.g. "mon-fri 08:30 Europe/Berlin"
    autostop: str | None = None  # the same, always with its zone
    autostart_fired_at: datetime | None = None  # the due time last acted on, or when the autostart was set
    autostop_fired_at: datetime | None = None
    pool: str | None = None  # while it waits in its template's warm pool (see vmhost.core.pools): the template
    # made from its repository's devcontainer.json (see vmhost.core.devcontainer): re-read at each rebuild
    devcontainer: bool = False
    workdir: str | None = None  # where commands and shells start (None: /workspace)
    user: str | None = None  # what the container and its commands run as (None: the image's user)
    post_start: list[str | list[str]] = field(default_factory=list)  # run at each start
    post_attach: list[str | list[str]] = field(default_factory=list)  # run in each terminal before its shell
    port_labels: dict[str, str] = field(default_factory=dict)  # a port's name, e.g. {"3000": "App"}
    display_name: str | None = None  # the devcontainer's `name`
    # where each setting came from: {"image": "devcontainer", "env.FOO": "request", "provision.2": "template"}
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def start_dir(self) -> str:
        """Where commands, shells and provisioning start unless told otherwise."""
        return self.workdir or "/workspace"

    def running_container(self, why: str = "") -> str:
        """The id of the container of this workspace, which must be running; InvalidState says how to
        start it (after `why`, what needs it running, when given)."""
        if self.status == WorkspaceStatus.UNREACHABLE:
            raise InvalidState(self.unreachable_detail())
        if self.status != WorkspaceStatus.RUNNING or not self.container_id:
            hint = f"start it with 'vmhost ws start {self.name}'"
            raise InvalidState(f"workspace {self.name!r} is {self.status}; " + (f"{why} ({hint})" if why else hint))
        return self.container_id

    def unreachable_detail(self) -> str:
        return (f"workspace {self.name!r} is unreachable: {self.status_reason or 'its node is down'}; wait for the "
                "node to come back (or delete the workspace)")

    @property
    def idle_stop_at(self) -> datetime | None:
        """When the janitor stops this workspace if nothing happens on it before: only a running workspace
        with an idle timeout is ever stopped for being idle."""
        if self.status != WorkspaceStatus.RUNNING or not self.idle_timeout_seconds or self.last_activity_at is None:
            return None
        return self.last_activity_at + timedelta(seconds=self.idle_timeout_seconds)

    @property
    def next_autostart_at(self) -> datetime | None:
        return schedules.next_due(schedules.parse(self.autostart), utcnow()) if self.autostart else None

    @property
    def next_autostop_at(self) -> datetime | None:
        return schedules.next_due(schedules.parse(self.autostop), utcnow()) if self.autostop else None


@dataclass
class Operation:
    id: str
    type: str
    status: OperationStatus
    workspace_id: str | None
    workspace_name: str | None
    owner: str
    requested_by: str
    created_at: datetime
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0


def command_list(commands: Iterable[str | Sequence[str]]) -> list[str | list[str]]:
    """Commands as a workspace keeps them: a shell line as it is, an argv as a list (a template's, or a
    devcontainer.json's, may be tuples)."""
    return [command if isinstance(command, str) else list(command) for command in commands]


@dataclass(frozen=True)
class Template:
    name: str
    image: str
    description: str = ""
    command: tuple[str, ...] = ("sleep", "infinity")
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    provision: tuple[str | tuple[str, ...], ...] = ()
    cpus: float | None = None
    memory_mb: int | None = None
    shell: str | None = None
    source: str = "builtin"
    capabilities: tuple[str, ...] = ()
    idle_timeout_seconds: int | None = None
    pool_size: int = 0  # workspaces of it kept created, started and provisioned, for creates to claim
    devcontainer: bool = False  # its workspaces apply their repository's devcontainer.json


@dataclass
class Token:
    id: str
    user: str
    name: str
    scope: Scope
    admin: bool
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class SshKey:
    """A user's SSH public key (see vmhost.core.sshkeys)."""

    id: str
    user: str
    public_key: str  # OpenSSH form, without the comment
    fingerprint: str  # "SHA256:..."
    comment: str
    admin: bool  # an admin key: may open any user's workspace
    created_at: datetime


@dataclass
class Event:
    id: int
    type: str
    time: datetime
    workspace_id: str | None
    owner: str | None
    payload: dict[str, Any] = field(default_factory=dict)


class SnapshotStatus(enum.StrEnum):
    CREATING = "creating"
    READY = "ready"


@dataclass
class Snapshot:
    """A workspace's container filesystem (a committed image) and its /workspace volume (a tar file)."""

    id: str
    workspace_id: str
    name: str
    owner: str
    status: SnapshotStatus
    image: str
    archive: str
    created_at: datetime
    image_bytes: int = 0
    volume_bytes: int = 0
    operation_id: str | None = None

    @property
    def size_bytes(self) -> int:
        return self.image_bytes + self.volume_bytes


@dataclass(frozen=True)
class ContainerState:
    """What the engine sees of a workspace's container."""

    exists: bool
    running: bool = False
    status: str = "missing"
    ports: dict[str, str] = field(default_factory=dict)
    container_id: str | None = None
    node: str | None = None  # the node it runs on (or is pinned to), on an engine with several
    reason: str | None = None  # why it is as it is, when the engine knows (e.g. its node is down)
