"""The provider: what the orchestrator needs from a container engine, and the Docker implementation.

One provider object per engine, handed to the orchestrator. Docker's errors are mapped here, once:
an engine that does not answer is `DockerUnavailable`, an engine that refuses is `ProviderError`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from vmhost.core.models import ContainerState
from vmhost.errors import DockerUnavailable, ProviderError, VmhostError

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)

OutputCallback = Callable[[str, bytes], None]
"""Receives (stream name, chunk) as a command produces output: stream is "stdout" or "stderr"."""


# Enough for a developer working as root in the container (packages, file ownership, dropping to a
# user, binding low ports), far less than Docker's default set (no NET_RAW, MKNOD, SETPCAP, SETFCAP).
DEFAULT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "KILL",
                        "NET_BIND_SERVICE", "SYS_CHROOT", "AUDIT_WRITE")


# json-file logs rotated: at most 3 files of 10 MB per container on the host's disk
LOG_MAX_SIZE = "10m"
LOG_MAX_FILES = 3


@dataclass(frozen=True)
class NetworkSpec:
    """A bridge network of vmhost's."""

    name: str
    labels: dict[str, str]


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
    network: str | None = None  # a network's name (see ensure_network); None: Docker's default bridge
    env: dict[str, str] = field(default_factory=dict)
    ports: tuple[str, ...] = ()
    publish_address: str = "127.0.0.1"
    hostname: str | None = None
    capabilities: tuple[str, ...] = ()  # asked for by the template, on top of DEFAULT_CAPABILITIES


@dataclass(frozen=True)
class CommandOutcome:
    """How a command started with `run_command` ended. `exit_code` is always set: 137 when vmhost killed
    it, 126 or 127 when it could not start (then `error` says why in words)."""

    exit_code: int
    timed_out: bool = False
    cancelled: bool = False
    error: str | None = None


MANAGED_KINDS = ("container", "volume", "image", "network")


@dataclass(frozen=True)
class ManagedObject:
    kind: str  # one of MANAGED_KINDS
    id: str
    name: str
    labels: dict[str, str]


# Go's os.FileMode type bits, as Docker reports them in a path's stat
_GO_MODE_DIR = 1 << 31
_GO_MODE_SYMLINK = 1 << 27
_GO_MODE_TYPE = _GO_MODE_DIR | _GO_MODE_SYMLINK | (1 << 26) | (1 << 25) | (1 << 24) | (1 << 21) | (1 << 19)


@dataclass(frozen=True)
class PathStat:
    """What Docker says of a path inside a container."""

    name: str
    size: int
    mode: int
    mtime: str
    link_target: str = ""

    @property
    def kind(self) -> str:
        if self.mode & _GO_MODE_DIR:
            return "directory"
        if self.mode & _GO_MODE_SYMLINK:
            return "symlink"
        return "other" if self.mode & _GO_MODE_TYPE else "file"


@dataclass(frozen=True)
class CommittedImage:
    id: str
    added_bytes: int  # what the commit added on top of the container's image


@dataclass(frozen=True)
class ContainerEvent:
    action: str  # start, die, stop or destroy
    container_id: str
    labels: dict[str, str]


PING_TIMEOUT = 5  # seconds: an engine slower than this to answer a ping counts as unreachable
WATCHED_ACTIONS = ("start", "die", "stop", "destroy")


class EventStream(Protocol):
    """Container events as they happen; `close()` (from any thread) ends the iteration."""

    def __iter__(self) -> Iterator[ContainerEvent]: ...
    def close(self) -> None: ...


class Provider(Protocol):
    def ping(self) -> None: ...
    def cpu_count(self) -> int: ...
    def ensure_image(self, image: str) -> None: ...
    def create_volume(self, name: str, labels: dict[str, str]) -> None: ...
    def remove_volume(self, name: str) -> None: ...
    def ensure_network(self, network: NetworkSpec) -> None: ...
    def remove_network(self, name: str) -> None: ...
    def create_container(self, spec: ContainerSpec) -> str: ...
    def put_archive(self, container_id: str, path: str, archive: IO[bytes]) -> None: ...
    def start(self, container_id: str) -> None: ...
    def stop(self, container_id: str, timeout: int) -> None: ...
    def restart(self, container_id: str, timeout: int) -> None: ...
    def remove_container(self, container_id: str) -> None: ...
    def inspect(self, container_id: str) -> ContainerState: ...
    def list_managed(self, labels: dict[str, str], kinds: Collection[str] = MANAGED_KINDS) -> list[ManagedObject]: ...
    def commit(self, container_id: str, repository: str, tag: str, labels: dict[str, str]) -> CommittedImage: ...
    def get_archive(self, container_id: str, path: str) -> tuple[Generator[bytes, None, None], PathStat]: ...
    def stat_path(self, container_id: str, path: str) -> PathStat | None: ...
    def remove_image(self, image: str) -> bool: ...
    def run_command(self, container_id: str, argv: list[str], *, on_output: OutputCallback,
                    env: dict[str, str] | None = None, workdir: str | None = None, stdin: bytes | None = None,
                    timeout: float | None = None, cancel: threading.Event | None = None) -> CommandOutcome: ...
    def open_terminal(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
                      workdir: str | None = None) -> Terminal: ...
    def logs(self, container_id: str, follow: bool = False, tail: int | None = None) -> LogStream: ...
    def image_present(self, image: str) -> bool: ...
    def data_root(self) -> str | None: ...
    def container_events(self, labels: dict[str, str]) -> EventStream: ...


class Terminal(Protocol):
    """An interactive command on a pseudo-terminal. Its methods block; call them from threads.
    `read()` answers the next bytes the command wrote, b"" once it has ended."""

    def read(self) -> bytes: ...
    def write(self, data: bytes) -> None: ...
    def resize(self, cols: int, rows: int) -> None: ...
    def exit_code(self) -> int | None: ...
    def close(self) -> None: ...


class LogStream(Protocol):
    """A container's output as chunks of bytes; `close()` (from any thread) ends the iteration."""

    def __iter__(self) -> Iterator[bytes]: ...
    def close(self) -> None: ...


class DockerProvider:
    """A provider over one Docker engine, through the docker SDK. The client connects lazily and
    reconnects after the engine comes back."""

    def __init__(self, base_url: str | None = None, timeout: int = 120) -> None:
        self.base_url = base_url or "unix:///var/run/docker.sock"
        self.timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        # Docker lets two networks share a name (it ignores CheckDuplicate since API 1.44): parallel creates
        # of one owner's workspaces must not both make theirs
        self._network_lock = threading.Lock()
        self._cpu_count: int | None = None  # read once a connection: `docker info` takes 10 ms and more

    @property
    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                import docker

                with self._errors("connect to Docker"):
                    # a short timeout while connecting (it asks for the version), so a hung engine is
                    # found out in seconds; then the long one for real work
                    self._client = docker.DockerClient(base_url=self.base_url, timeout=PING_TIMEOUT,
                                                       version="auto")
                    self._client.api.timeout = self.timeout
                self._cpu_count = None
            return self._client

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        import docker.errors
        import requests.exceptions

        try:
            yield
        except docker.errors.NotFound as exc:
            raise ProviderError(f"cannot {doing}: {_explain(exc)}", missing=True) from exc
        except docker.errors.APIError as exc:
            if exc.status_code is not None and exc.status_code >= 500 and "connection" in str(exc).lower():
                self._client = None
                raise DockerUnavailable(f"Docker engine does not answer ({doing}): {_explain(exc)}") from exc
            raise ProviderError(f"cannot {doing}: {_explain(exc)}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, docker.errors.DockerException,
                ConnectionError, FileNotFoundError) as exc:
            self._client = None
            raise DockerUnavailable(f"Docker engine at {self.base_url} does not answer ({doing}): {exc}") from exc

    def ping(self) -> None:
        with self._errors("ping Docker"):
            api = self.client.api
            api._raise_for_status(api.get(api._url("/_ping"), timeout=PING_TIMEOUT))

    def cpu_count(self) -> int:
        if self._cpu_count is None:
            with self._errors("read Docker's CPU count"):
                self._cpu_count = int(self.client.info().get("NCPU") or 1)
        return self._cpu_count

    def ensure_image(self, image: str) -> None:
        import docker.errors

        with self._errors(f"find image {image}"):
            try:
                self.client.images.get(image)
                return
            except docker.errors.ImageNotFound:
                pass
        try:
            with self._errors(f"pull image {image}"):
                self.client.images.pull(image)
        except ProviderError as exc:
            raise ProviderError(f"image {image} is not on this host and could not be pulled: {exc.detail}") \
                from exc

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        with self._errors(f"create volume {name}"):
            self.client.volumes.create(name=name, labels=labels)

    def remove_volume(self, name: str) -> None:
        import docker.errors

        with self._errors(f"remove volume {name}"):
            try:
                self.client.volumes.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass

    def remove_network(self, name: str) -> None:
        """Remove a network; one missing, or still joined by a running container, is left alone."""
        import docker.errors

        with self._errors(f"remove network {name}"):
            try:
                self.client.api.remove_network(name)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 403:  # 403: it has active endpoints
                    raise

    def ensure_network(self, network: NetworkSpec) -> None:
        """Make the bridge network unless it exists."""
        import docker.errors

        with self._errors(f"create network {network.name}"), self._network_lock:
            try:
                self.client.api.inspect_network(network.name)
            except docker.errors.NotFound:
                try:
                    self.client.api.create_network(network.name, driver="bridge", labels=network.labels,
                                                   check_duplicate=True)
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:  # made meanwhile by a parallel create
                        raise

    def create_container(self, spec: ContainerSpec) -> str:
        import docker.errors
        from docker.types import LogConfig, Mount

        with self._errors(f"create container {spec.name}"):
            try:  # a leftover of an interrupted attempt
                self.client.api.remove_container(spec.name, force=True)
            except docker.errors.NotFound:
                pass
            container = self.client.containers.create(
                spec.image,
                command=spec.command,
                name=spec.name,
                hostname=spec.hostname,
                labels=spec.labels,
                environment=spec.env,
                init=True,
                detach=True,
                mounts=[Mount(target="/workspace", source=spec.volume, type="volume")],
                working_dir="/workspace",
                nano_cpus=int(spec.cpus * 1e9),
                mem_limit=f"{spec.memory_mb}m",
                memswap_limit=f"{spec.memory_mb}m",
                ports={_port_key(p): (spec.publish_address, None) for p in spec.ports},
                pids_limit=spec.pids_limit,
                log_config=LogConfig(type="json-file",
                                     config={"max-size": LOG_MAX_SIZE, "max-file": str(LOG_MAX_FILES)}),
                network=spec.network,
                security_opt=["no-new-privileges"],
                cap_drop=["ALL"],
                cap_add=list(dict.fromkeys((*DEFAULT_CAPABILITIES, *spec.capabilities))),
                privileged=False,
            )
            return container.id

    def put_archive(self, container_id: str, path: str, archive: IO[bytes]) -> None:
        with self._errors(f"copy files into {path}"):
            if not self.client.api.put_archive(container_id, path, archive):
                raise ProviderError(f"Docker refused the copy into {path}")

    def get_archive(self, container_id: str, path: str) -> tuple[Generator[bytes, None, None], PathStat]:
        """A tar of `path` (a file, a directory or a link, not followed), streamed, with its stat. Close the
        stream when not reading it to its end: until its connection closes, Docker holds the container."""
        import docker.utils

        api = self.client.api
        with self._errors(f"copy {path} out of the container"):
            response = api._get(api._url("/containers/{0}/archive", container_id), params={"path": path},
                                stream=True, headers={"Accept-Encoding": "identity"})
            api._raise_for_status(response)
            stat = docker.utils.decode_json_header(response.headers["x-docker-container-path-stat"])

        def chunks() -> Generator[bytes, None, None]:
            try:
                with self._errors(f"copy {path} out of the container"):
                    yield from response.raw.stream(1024 * 1024, decode_content=False)
            finally:
                response.close()

        return chunks(), _path_stat(stat)

    def stat_path(self, container_id: str, path: str) -> PathStat | None:
        """The stat of `path` in the container, or None when nothing is there."""
        import docker.utils

        api = self.client.api
        with self._errors(f"look at {path} in the container"):
            response = api.head(api._url("/containers/{0}/archive", container_id), params={"path": path})
            if response.status_code == 404:
                api.inspect_container(container_id)  # a missing container is an error, a missing path is not
                return None
            api._raise_for_status(response)
        return _path_stat(docker.utils.decode_json_header(response.headers["x-docker-container-path-stat"]))

    def commit(self, container_id: str, repository: str, tag: str, labels: dict[str, str]) -> CommittedImage:
        """Commit the container's filesystem (not its volumes) to a tagged, labelled image."""
        api = self.client.api
        with self._errors("commit the container's filesystem"):
            base = api.inspect_container(container_id)["Image"]
            image_id = api.commit(container_id, repository=repository, tag=tag,
                                  changes=[f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()])["Id"]
            added = api.inspect_image(image_id)["Size"] - api.inspect_image(base)["Size"]
        return CommittedImage(id=image_id, added_bytes=max(added, 0))

    def remove_image(self, image: str) -> bool:
        """Remove one image unless a container still uses it (then False: left for a later sweep)."""
        import docker.errors

        with self._errors(f"remove image {image}"):
            try:
                self.client.api.remove_image(image)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    return False
                if not self.image_present(image):  # removed meanwhile, e.g. with a child image just removed
                    return True
                raise
        return True

    def start(self, container_id: str) -> None:
        with self._errors("start the container"):
            self.client.api.start(container_id)

    def stop(self, container_id: str, timeout: int) -> None:
        with self._errors("stop the container"):
            self.client.api.stop(container_id, timeout=timeout)

    def restart(self, container_id: str, timeout: int) -> None:
        with self._errors("restart the container"):
            self.client.api.restart(container_id, timeout=timeout)

    def remove_container(self, container_id: str) -> None:
        import docker.errors

        with self._errors("remove the container"):
            try:
                self.client.api.remove_container(container_id, force=True, v=False)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 409 or "already in progress" not in str(exc):
                    raise
                self._wait_removed(container_id)  # someone else is removing it: done once it is gone

    def _wait_removed(self, container_id: str, timeout: float = 30.0) -> None:
        import docker.errors

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.client.api.inspect_container(container_id)
            except docker.errors.NotFound:
                return
            time.sleep(0.1)
        raise ProviderError(f"container {container_id[:12]} was still being removed after {timeout:.0f} s")

    def inspect(self, container_id: str) -> ContainerState:
        import docker.errors

        with self._errors("inspect the container"):
            try:
                info = self.client.api.inspect_container(container_id)
            except docker.errors.NotFound:
                return ContainerState(exists=False)
        state = info.get("State") or {}
        ports = {}
        for key, bindings in ((info.get("NetworkSettings") or {}).get("Ports") or {}).items():
            if bindings:
                ports[key] = f"{bindings[0]['HostIp'] or '0.0.0.0'}:{bindings[0]['HostPort']}"
        return ContainerState(exists=True, running=bool(state.get("Running")), status=state.get("Status", "unknown"),
                              ports=ports, container_id=info.get("Id"))

    def run_command(self, container_id: str, argv: list[str], *, on_output: OutputCallback,
                    env: dict[str, str] | None = None, workdir: str | None = None, stdin: bytes | None = None,
                    timeout: float | None = None, cancel: threading.Event | None = None) -> CommandOutcome:
        """Run `argv` in the container, handing each chunk of output to `on_output` as it arrives. After
        `timeout` seconds, or once `cancel` is set, the command is killed with all its processes."""
        from docker.utils.socket import frames_iter

        api = self.client.api
        with self._errors(f"run {argv[0]}"):
            exec_id = api.exec_create(container_id, argv, environment=env or None, workdir=workdir,
                                      stdout=True, stderr=True, stdin=stdin is not None)["Id"]
            connection = api.exec_start(exec_id, socket=True)
        sock = getattr(connection, "_sock", connection)
        ended = threading.Event()
        stopped: list[str] = []
        threading.Thread(target=self._watch_command, args=(exec_id, sock, timeout, cancel, ended, stopped),
                         name="vmhost-exec-watch", daemon=True).start()
        if stdin is not None:
            threading.Thread(target=_feed, args=(sock, stdin), name="vmhost-exec-stdin", daemon=True).start()
        held = b""  # Docker reports a command it could not start as output on stdout
        seen_stdout = False
        try:
            for stream, data in frames_iter(connection, tty=False):
                name = "stderr" if stream == 2 else "stdout"
                if name == "stdout" and not seen_stdout:
                    seen_stdout = True
                    if data.startswith(_START_FAILED):
                        held = data
                        continue
                if held:
                    on_output("stdout", held)
                    held = b""
                on_output(name, data)
        except OSError:
            pass  # the watcher closed the connection
        finally:
            ended.set()
            _close_quietly(connection)
        info = self._finished_exec(exec_id)
        killed = stopped[0] if stopped else None
        if held and not info.get("Pid"):
            code, error = _start_failure(held.decode("utf-8", errors="replace"), argv, workdir)
            return CommandOutcome(exit_code=code, error=error)
        if held:
            on_output("stdout", held)
        exit_code = info.get("ExitCode")
        if exit_code is None:
            exit_code = 137 if killed else 255
        return CommandOutcome(exit_code=int(exit_code), timed_out=killed == "timeout", cancelled=killed == "cancel",
                              error=None if info.get("ExitCode") is not None or killed
                              else "Docker did not report an exit code")

    def _finished_exec(self, exec_id: str, wait: float = 5.0) -> dict[str, Any]:
        """exec_inspect once the command has ended (Docker may need a moment after the stream closes)."""
        deadline = time.monotonic() + wait
        while True:
            with self._errors("read the command's exit code"):
                info = self.client.api.exec_inspect(exec_id)
            if (not info.get("Running") and info.get("ExitCode") is not None) or time.monotonic() >= deadline:
                return info
            time.sleep(0.05)

    def _watch_command(self, exec_id: str, sock: Any, timeout: float | None, cancel: threading.Event | None,
                       ended: threading.Event, stopped: list[str]) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ended.wait(0.1):
            if cancel is not None and cancel.is_set():
                stopped.append("cancel")
            elif deadline is not None and time.monotonic() >= deadline:
                stopped.append("timeout")
            else:
                continue
            try:
                self._kill_exec(exec_id)
            except VmhostError as exc:
                log.warning("could not kill exec %s: %s", exec_id, exc.detail)
            if not ended.wait(KILL_GRACE):  # a process the kill could not reach still holds the output open
                _close_quietly(sock)
            return

    def _kill_exec(self, exec_id: str, wait: float = 5.0) -> None:
        deadline = time.monotonic() + wait
        while True:  # a command cancelled as it starts has no pid yet: wait for one, or for its end
            with self._errors("stop the command"):
                info = self.client.api.exec_inspect(exec_id)
            pid, container_id = info.get("Pid") or 0, info.get("ContainerID") or ""
            if info.get("Running") and pid:
                break
            if info.get("ExitCode") is not None or time.monotonic() >= deadline:
                return
            time.sleep(0.02)
        # Docker reports the host's pid: only usable when this daemon sees the engine's processes
        if not _in_container(pid, container_id):
            raise ProviderError(f"cannot kill the command: its process {pid} is not visible to vmhost "
                                "(is the Docker engine on another host?)")
        kill_process_tree(pid)

    def open_terminal(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
                      workdir: str | None = None) -> DockerTerminal:
        api = self.client.api
        with self._errors(f"open a terminal running {argv[0] if argv else 'a shell'}"):
            exec_id = api.exec_create(container_id, argv, stdin=True, tty=True, stdout=True, stderr=True,
                                      environment=env or None, workdir=workdir)["Id"]
            connection = api.exec_start(exec_id, socket=True, tty=True)
        return DockerTerminal(self, exec_id, connection)

    def logs(self, container_id: str, follow: bool = False, tail: int | None = None) -> DockerLogStream:
        with self._errors("read the container's output"):
            stream = self.client.api.logs(container_id, stream=True, follow=follow, stdout=True, stderr=True,
                                          tail="all" if tail is None else tail)
        return DockerLogStream(self, stream)

    def list_managed(self, labels: dict[str, str], kinds: Collection[str] = MANAGED_KINDS) -> list[ManagedObject]:
        filters = {"label": _label_filters(labels)}
        found: list[ManagedObject] = []
        with self._errors("list vmhost's Docker objects"):
            if "container" in kinds:
                for c in self.client.api.containers(all=True, filters=filters):
                    found.append(ManagedObject("container", c["Id"], c["Names"][0].lstrip("/"), c.get("Labels") or {}))
            if "volume" in kinds:
                for v in self.client.api.volumes(filters=filters).get("Volumes") or []:
                    found.append(ManagedObject("volume", v["Name"], v["Name"], v.get("Labels") or {}))
            if "image" in kinds:
                for i in self.client.api.images(filters=filters):
                    tags = i.get("RepoTags") or [i["Id"]]
                    found.append(ManagedObject("image", i["Id"], tags[0], i.get("Labels") or {}))
            if "network" in kinds:
                for n in self.client.api.networks(filters=filters):
                    found.append(ManagedObject("network", n["Id"], n["Name"], n.get("Labels") or {}))
        return found

    def image_present(self, image: str) -> bool:
        import docker.errors

        with self._errors(f"find image {image}"):
            try:
                self.client.api.inspect_image(image)
                return True
            except docker.errors.ImageNotFound:
                return False

    def data_root(self) -> str | None:
        """Where the engine keeps images and volumes, when the engine runs on this host."""
        if not self.base_url.startswith("unix://"):
            return None
        with self._errors("read Docker's data directory"):
            return self.client.info().get("DockerRootDir")

    def container_events(self, labels: dict[str, str]) -> EventStream:
        with self._errors("follow Docker's events"):
            stream = self.client.api.events(decode=True, filters={
                "type": ["container"], "label": _label_filters(labels), "event": list(WATCHED_ACTIONS)})
        return _DockerEventStream(stream, self)


class _DockerEventStream:
    def __init__(self, stream: Any, provider: DockerProvider) -> None:
        self._stream = stream
        self._provider = provider

    def __iter__(self) -> Iterator[ContainerEvent]:
        with self._provider._errors("follow Docker's events"):
            for raw in self._stream:
                actor = raw.get("Actor") or {}
                yield ContainerEvent(action=raw.get("Action") or raw.get("status") or "",
                                     container_id=actor.get("ID") or raw.get("id") or "",
                                     labels=dict(actor.get("Attributes") or {}))

    def close(self) -> None:
        try:
            self._stream.close()
        except OSError:
            pass


class DockerTerminal:
    """A docker exec with a TTY, over the engine's hijacked connection (raw bytes both ways)."""

    def __init__(self, provider: DockerProvider, exec_id: str, connection: Any) -> None:
        self.provider = provider
        self.exec_id = exec_id
        self._connection = connection
        self._sock = getattr(connection, "_sock", connection)
        self._closing = threading.Lock()
        self._closed = False

    def read(self) -> bytes:
        try:
            return self._sock.recv(65536)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise ProviderError(f"the terminal is closed: {exc}") from exc

    def resize(self, cols: int, rows: int) -> None:
        with self.provider._errors("resize the terminal"):
            self.provider.client.api.exec_resize(self.exec_id, height=rows, width=cols)

    def exit_code(self, wait: float = 5.0) -> int | None:
        """The command's exit code once it has ended (Docker may need a moment after the stream closes)."""
        deadline = time.monotonic() + wait
        while True:
            with self.provider._errors("read the exit code"):
                info = self.provider.client.api.exec_inspect(self.exec_id)
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def close(self) -> None:
        """Hang up, then end the command with every process it started if it still runs: Docker leaves
        a terminal's command running when its connection closes."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            for step in (lambda: self._sock.shutdown(socket.SHUT_RDWR), self._sock.close, self._connection.close):
                try:
                    step()
                except OSError:
                    pass
            try:
                self.provider._kill_exec(self.exec_id)
            except VmhostError as exc:
                log.warning("could not end terminal command %s: %s", self.exec_id, exc.detail)


class DockerLogStream:
    def __init__(self, provider: DockerProvider, stream: Any) -> None:
        self.provider = provider
        self._stream = stream
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            with self.provider._errors("read the container's output"):
                yield from self._stream
        except VmhostError:
            if not self._closed:
                raise

    def close(self) -> None:
        self._closed = True
        try:
            self._stream.close()
        except OSError:
            pass


_START_FAILED = b"OCI runtime exec failed"
KILL_GRACE = 3.0


def _start_failure(message: str, argv: list[str], workdir: str | None) -> tuple[int, str]:
    """Docker's 'OCI runtime exec failed' text as an exit code and a sentence a person can act on."""
    if "chdir to cwd" in message:
        return 126, f"cannot run {argv[0]}: the working directory {workdir} does not exist in the workspace"
    if "executable file not found" in message or "no such file or directory" in message:
        return 127, f"command not found in the workspace: {argv[0]}"
    if "permission denied" in message:
        return 126, f"cannot run {argv[0]}: permission denied (is it an executable file?)"
    return 126, f"cannot run {argv[0]}: {message.strip()}"


def _feed(sock: Any, data: bytes) -> None:
    """Write a command's standard input, then close it so the command sees its end."""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _close_quietly(connection: Any) -> None:
    for step in (lambda: connection.shutdown(socket.SHUT_RDWR), connection.close):
        try:
            step()
        except (OSError, AttributeError):
            pass


def _in_container(pid: int, container_id: str) -> bool:
    try:
        with open(f"/proc/{pid}/cgroup") as handle:
            return bool(container_id) and container_id in handle.read()
    except OSError:
        return False


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) for every process this host shows."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def _process_tree(root: int) -> set[int]:
    """`root`, the members of its process group, and all their descendants."""
    table = _process_table()
    tree = {pid for pid, (_, group) in table.items() if pid == root or group == root}
    while True:
        children = {pid for pid, (parent, _) in table.items() if parent in tree} - tree
        if not children:
            return tree
        tree |= children


def kill_process_tree(root: int) -> None:
    """SIGKILL a process with its process group and descendants. Each is stopped first, so none can
    start a child that the sweep misses."""
    victims: set[int] = set()
    while True:
        found = _process_tree(root) - victims
        if not found:
            break
        for pid in found:
            _signal(pid, signal.SIGSTOP)
        victims |= found
    for pid in victims:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def _path_stat(raw: dict[str, Any]) -> PathStat:
    return PathStat(name=raw.get("name", ""), size=int(raw.get("size") or 0), mode=int(raw.get("mode") or 0),
                    mtime=raw.get("mtime", ""), link_target=raw.get("linkTarget") or "")


def _port_key(port: str | int) -> str:
    text = str(port)
    return text if "/" in text else f"{text}/tcp"


def _label_filters(labels: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in labels.items()]


def _explain(exc: Any) -> str:
    return str(getattr(exc, "explanation", None) or exc)
