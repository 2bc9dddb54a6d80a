"""The engine: what the orchestrator needs from a container engine, and the values that cross it.

Nothing of Docker here (no docker SDK import): an engine module under `vmhost/core/engines/` implements
`Engine` and maps its own errors to vmhost's, once: an engine that does not answer is
`DockerUnavailable`, an engine that refuses is `ProviderError` (with `missing=True` when what was named
is not there).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Generator, Iterator
from dataclasses import dataclass, field
from typing import IO, Literal, Protocol

from vmhost.core.models import ContainerState

__all__ = [
    "DEFAULT_CAPABILITIES",
    "LOCAL_NODE",
    "ONE_HOST_HAS_NO_NODES",
    "MANAGED_KINDS",
    "NODE_UP",
    "WATCHED_ACTIONS",
    "CommandOutcome",
    "CommittedImage",
    "ContainerEvent",
    "ContainerSpec",
    "ContainerState",
    "Engine",
    "EventStream",
    "LogStream",
    "ManagedObject",
    "NetworkSpec",
    "NodeInfo",
    "OutputCallback",
    "PathStat",
    "Terminal",
    "UNREACHABLE",
]

OutputCallback = Callable[[str, bytes], None]
"""Receives (stream name, chunk) as a command produces output: stream is "stdout" or "stderr"."""


# Enough for a developer working as root in the container (packages, file ownership, dropping to a
# user, binding low ports), far less than Docker's default set (no NET_RAW, MKNOD, SETPCAP, SETFCAP).
DEFAULT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL",
                        "NET_BIND_SERVICE", "SYS_CHROOT", "AUDIT_WRITE")

MANAGED_KINDS = ("container", "volume", "image", "network")
WORKSPACE_LABEL = "vmhost.workspace"  # on every Docker object of a workspace: its id
LOCAL_NODE = "local"  # the one node of an engine that is a single Docker host
UNREACHABLE = "unreachable"  # ContainerState.status of a container on a node that is down
NODE_UP = ("ready", "drain", "paused")  # NodeInfo.state of a node that answers (drain, paused: takes no new work)
ONE_HOST_HAS_NO_NODES = ("vmhost runs on one Docker engine (the engine setting is docker): it has no nodes to "
                         "name engines for, drain or activate")
WATCHED_ACTIONS = ("start", "die", "stop", "destroy")  # the container events `container_events` reports


@dataclass(frozen=True)
class NetworkSpec:
    """A bridge network of vmhost's. On an `isolated` one the containers cannot reach each other (Docker's
    enable_icc off): each is alone on it, as on a network of its own."""

    name: str
    labels: dict[str, str]
    isolated: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: list[str]
    labels: dict[str, str]
    volume: str
    cpus: float
    memory_mb: int  # also the limit of memory plus swap: no swap beyond it
    pids_limit: int
    publish_address: str  # host address the ports are published on
    network: str | None = None  # a network's name (see ensure_network); None: the engine's default bridge
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    hostname: str | None = None
    capabilities: tuple[str, ...] = ()  # asked for by the template, on top of DEFAULT_CAPABILITIES
    node: str | None = None  # the node it must run on (where its volume is), on an engine with several
    workdir: str = "/workspace"  # where its commands start unless told otherwise
    user: str | None = None  # what it and its commands run as (None: the image's user)


@dataclass(frozen=True)
class CommandOutcome:
    """How a command started with `run_command` ended. `exit_code` is always set: 137 when vmhost killed
    it, 126 or 127 when it could not start (then `error` says why in words)."""

    exit_code: int
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None


@dataclass(frozen=True)
class ManagedObject:
    kind: str  # one of MANAGED_KINDS
    id: str
    name: str
    labels: dict[str, str]


# Go's os.FileMode type bits, which `PathStat.mode` holds (as Docker reports them in a path's stat)
_GO_MODE_DIR = 1 << 31
_GO_MODE_SYMLINK = 1 << 27
_GO_MODE_TYPE = _GO_MODE_DIR | _GO_MODE_SYMLINK | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)


PathKind = Literal["file", "directory", "symlink", "other"]


@dataclass(frozen=True)
class PathStat:
    """What the engine says of a path inside a container. `mode` holds the permission bits and Go's
    os.FileMode type bits."""

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str = ""

    @property
    def kind(self) -> PathKind:
        if self.mode & _GO_MODE_DIR:
            return "directory"
        if self.mode & _GO_MODE_SYMLINK:
            return "symlink"
        return "other" if self.mode & _GO_MODE_TYPE else "file"


@dataclass(frozen=True)
class NodeInfo:
    """A host the engine runs workspaces on: a Swarm node, or the one Docker engine (id "local")."""

    id: str
    hostname: str
    address: str
    state: str  # ready, down, drain (Swarm's node state, or its availability when that is drain), unknown
    engine_url: str
    cpus: int
    memory_mb: int
    cpus_reserved: float = 0.0
    memory_mb_reserved: int = 0
    manager: bool = False


@dataclass(frozen=True)
class CommittedImage:
    id: str
    added_bytes: int  # what the commit added on top of the container's image


@dataclass(frozen=True)
class ContainerEvent:
    action: str  # one of WATCHED_ACTIONS
    container_id: str
    labels: dict[str, str]


def until_end(get: Callable[[], ContainerEvent | BaseException | None]) -> Iterator[ContainerEvent]:
    """The events `get()` answers (it blocks) until it answers None; an exception it answers is raised."""
    while True:
        item = get()
        if item is None:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


class EventStream(Protocol):
    """Container events as they happen; `close()` (from any thread) ends the iteration."""

    def __iter__(self) -> Iterator[ContainerEvent]: ...
    def close(self) -> None: ...


class Terminal(Protocol):
    """An interactive command on a pseudo-terminal. Its methods block; call them from threads.
    `read()` answers the next bytes the command wrote, b"" once it has ended."""

    def read(self) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    def resize(self, cols: int, rows: int) -> None: ...
    def exit_code(self) -> int | None: ...
    def close(self) -> None: ...


class Process(Protocol):
    """A command with no terminal, its standard streams apart. Its methods block; call them from threads.
    `read()` answers the next output as ("stdout" or "stderr", bytes), None once the command has closed
    both; `close_stdin()` lets the command see the end of its input."""

    def read(self) -> tuple[str, bytes] | None: ...
    def write(self, data: bytes) -> None: ...
    def close_stdin(self) -> None: ...
    def exit_code(self) -> int | None: ...
    def close(self) -> None: ...


class LogStream(Protocol):
    """A container's output as chunks of bytes; `close()` (from any thread) ends the iteration."""

    def __iter__(self) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class Engine(Protocol):
    """A container engine, one object per engine, handed to the orchestrator (see vmhost/core/build.py).

    Every command in a container (provisioning, "exec" operations, streamed commands) runs through
    `run_command`; `open_terminal` is the interactive shell on a pseudo-terminal. Objects are found by
    their labels; removing something that is not there is not an error."""

    def ping(self) -> None:
        """Return quickly when the engine answers; DockerUnavailable otherwise."""
    def cpu_count(self) -> int:
        """The most CPUs one workspace can have: those of the largest host."""
    def nodes(self) -> list[NodeInfo]:
        """The hosts workspaces run on (one for a single engine)."""
    def set_node_engine(self, node_id: str, url: str) -> None:
        """Name the engine of one node, for what its cluster does not do across nodes."""
    def node_problems(self, node_id: str, images: Collection[str]) -> list[str]:
        """What keeps one node from running workspaces: its engine not answering, images it lacks."""
    def set_node_availability(self, node_id: str, availability: str) -> None:
        """active: the node takes workspaces; pause: no new ones, those on it go on; drain: none."""
    def ensure_image(self, image: str, report: Callable[[str], None] | None = None) -> None:
        """Pull the image unless the engine has it (or, on a cluster, copy it to the nodes that lack it),
        telling `report` what it does in lines a person reads."""
    def build_image(self, context: IO[bytes], *, dockerfile: str, tag: str, buildargs: dict[str, str],
                    target: str | None, labels: dict[str, str], memory_mb: int,
                    on_output: Callable[[str], None]) -> None:
        """Build the image `tag` from a tar of the build context (`dockerfile` is a path in it), each step
        in at most `memory_mb` MB, handing the build's output to `on_output` as it comes; ProviderError when
        the build fails."""
    def create_volume(self, name: str, labels: dict[str, str]) -> None: ...
    def remove_volume(self, name: str) -> None: ...
    def ensure_network(self, network: NetworkSpec) -> None:
        """Make the bridge network unless it exists (parallel calls make one)."""
    def remove_network(self, name: str) -> None:
        """Remove a network; one missing, or still joined by a running container, is left alone."""
    def move_network(self, container_id: str, leave: str, join: str) -> None:
        """Move a (running) container from the network `leave` to the network `join`: joined first, then
        left; a container already there is left as it is, so a repeated move does nothing."""
    def create_container(self, spec: ContainerSpec) -> str:
        """Create (not start) the container, replacing a leftover of the same name; returns its id."""
    def put_archive(self, container_id: str, path: str, archive: IO[bytes]) -> None:
        """Extract a tar into the directory `path` of the container."""
    def start(self, container_id: str) -> None: ...
    def stop(self, container_id: str, timeout: int) -> None:
        """Stop the container, killing it after `timeout` seconds."""
    def restart(self, container_id: str, timeout: int) -> None: ...
    def remove_container(self, container_id: str) -> None:
        """Remove the container (running or not), keeping its volumes."""
    def inspect(self, container_id: str) -> ContainerState: ...
    def container_address(self, container_id: str, network: str | None) -> str | None:
        """The IP address this host reaches the running container at, on `network` (else its only one);
        nothing is published on the host for it. None where this host does not reach the container's
        addresses (a cluster's node): vmhost then reaches its ports through a command run in it."""
    def list_managed(self, labels: dict[str, str], kinds: Collection[str] = MANAGED_KINDS) -> list[ManagedObject]:
        """The objects of those kinds that carry all of `labels`."""
    def commit(self, container_id: str, repository: str, tag: str, labels: dict[str, str]) -> CommittedImage:
        """Commit the container's filesystem (not its volumes) to a tagged, labelled image."""
    def get_archive(self, container_id: str, path: str) -> tuple[Generator[bytes, None, None], PathStat]:
        """A tar of `path` (a file, a directory or a link, not followed), streamed, with its stat. The
        caller closes the stream when it does not read it to its end."""
    def stat_path(self, container_id: str, path: str) -> PathStat | None:
        """The stat of `path` in the container, or None when nothing is there (a missing container is
        an error)."""
    def remove_image(self, image: str) -> bool:
        """Remove one image unless a container still uses it (then False: left for a later sweep)."""
    def run_command(self, container_id: str, argv: list[str], *, on_output: OutputCallback,
                    env: dict[str, str] | None = None, workdir: str | None = None, stdin: bytes | None = None,
                    timeout: float | None = None, cancel: threading.Event | None = None) -> CommandOutcome:
        """Run `argv` in the container, handing each chunk of output to `on_output` as it arrives. After
        `timeout` seconds, or once `cancel` is set, the command is killed with all its processes."""
    def open_terminal(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
                      workdir: str | None = None) -> Terminal: ...
    def open_process(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
                     workdir: str | None = None) -> Process:
        """`argv` in the container with its stdin, stdout and stderr apart, as they come (no terminal)."""
    def logs(self, container_id: str, follow: bool = False, tail: int | None = None) -> LogStream: ...
    def image_present(self, image: str) -> bool: ...
    def data_root(self) -> str | None:
        """Where the engine keeps images and volumes, when it is on this host's disk; else None."""
    def container_events(self, labels: dict[str, str]) -> EventStream:
        """Events (WATCHED_ACTIONS) of the containers that carry all of `labels`, from now on."""
    def close(self) -> None:
        """Let go of the engine's connections (a later call connects again)."""
