"""The Docker engine: `Engine` (see base.py) over one Docker engine, through the docker SDK's public API.

Docker's errors are mapped here, once (`DockerEngine._errors`): an engine that does not answer is
`DockerUnavailable`, an engine that refuses is `ProviderError`. Only modules under vmhost/core/engines/
import the docker SDK.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Collection, Generator, Iterator
from contextlib import contextmanager
from typing import IO, Any
from urllib.parse import quote

import docker
import docker.errors
import docker.utils
import requests
import requests.exceptions
from docker.types import LogConfig, Mount
from docker.utils.socket import frames_iter

from vmhost.core.engines.base import (
    DEFAULT_CAPABILITIES,
    MANAGED_KINDS,
    WATCHED_ACTIONS,
    CommandOutcome,
    CommittedImage,
    ContainerEvent,
    ContainerSpec,
    EventStream,
    ManagedObject,
    NetworkSpec,
    OutputCallback,
    PathStat,
)
from vmhost.core.engines.hostprocess import in_container, kill_process_tree
from vmhost.core.models import ContainerState
from vmhost.errors import DockerUnavailable, ProviderError, VmhostError

log = logging.getLogger(__name__)

PING_TIMEOUT = 5  # seconds: an engine slower than this to answer a ping counts as unreachable
ARCHIVE_CHUNK = 1024 * 1024


class DockerEngine:
    """An engine over one Docker engine, through the docker SDK. The client connects lazily and
    reconnects after the engine comes back. `timeout` bounds each API call (seconds); containers log to
    json-file, rotated at `log_max_mb` MB, keeping `log_max_files` files."""

    def __init__(self, base_url: str | None, *, timeout: int, log_max_mb: int, log_max_files: int) -> None:
        self.base_url = base_url or "unix:///var/run/docker.sock"
        self.timeout = timeout
        self.log_config = {"max-size": f"{log_max_mb}m", "max-file": str(log_max_files)}
        self._client: docker.DockerClient | None = None
        self._pinger: docker.APIClient | None = None  # the same engine with PING_TIMEOUT for every call
        self._lock = threading.Lock()
        # Docker lets two networks share a name (it ignores CheckDuplicate since API 1.44): parallel creates
        # of one owner's workspaces must not both make theirs
        self._network_lock = threading.Lock()
        self._cpu_count: int | None = None  # read once a connection: `docker info` takes 10 ms and more

    def _connected(self) -> tuple[docker.DockerClient, docker.APIClient]:
        with self._lock:
            if self._client is None or self._pinger is None:
                with self._errors("connect to Docker"):
                    # a short timeout while connecting (it asks for the version), so a hung engine is
                    # found out in seconds; then the long one for real work
                    pinger = docker.APIClient(base_url=self.base_url, timeout=PING_TIMEOUT, version="auto")
                    self._client = docker.DockerClient(base_url=self.base_url, timeout=self.timeout,
                                                       version=pinger.api_version)
                    self._pinger = pinger
                self._cpu_count = None
            return self._client, self._pinger

    @property
    def client(self) -> docker.DockerClient:
        return self._connected()[0]

    def close(self) -> None:
        with self._lock:
            clients = (self._client, self._pinger)
            self._client = self._pinger = None
        for client in clients:
            if client is not None:
                client.close()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
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
            self._connected()[1].ping()

    def cpu_count(self) -> int:
        if self._cpu_count is None:
            with self._errors("read Docker's CPU count"):
                self._cpu_count = int(self.client.info().get("NCPU") or 1)
        return self._cpu_count

    def ensure_image(self, image: str) -> None:
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
        with self._errors(f"remove volume {name}"):
            try:
                self.client.volumes.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass

    def remove_network(self, name: str) -> None:
        """Remove a network; one missing, or still joined by a running container, is left alone."""
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
                # (address, None): any free port on that address, which the SDK's stubs leave out
                ports={_port_key(p): (spec.publish_address, None) for p in spec.ports},  # type: ignore[misc]
                pids_limit=spec.pids_limit,
                log_config=LogConfig(type="json-file", config=self.log_config),
                network=spec.network,
                security_opt=["no-new-privileges"],
                cap_drop=["ALL"],
                cap_add=list(dict.fromkeys((*DEFAULT_CAPABILITIES, *spec.capabilities))),
                privileged=False,
            )
            return container.attrs["Id"]

    def put_archive(self, container_id: str, path: str, archive: IO[bytes]) -> None:
        with self._errors(f"copy files into {path}"):
            if not self.client.api.put_archive(container_id, path, archive):
                raise ProviderError(f"Docker refused the copy into {path}")

    def get_archive(self, container_id: str, path: str) -> tuple[Generator[bytes, None, None], PathStat]:
        """A tar of `path` (a file, a directory or a link, not followed), streamed, with its stat. Close the
        stream when not reading it to its end: until its connection closes, Docker holds the container."""
        with self._errors(f"copy {path} out of the container"):
            stream, stat = self.client.api.get_archive(container_id, path, chunk_size=ARCHIVE_CHUNK)

        def chunks() -> Generator[bytes, None, None]:
            try:
                with self._errors(f"copy {path} out of the container"):
                    yield from stream
            finally:
                stream.close()  # closes the connection, also when the stream was never read

        return chunks(), _path_stat(stat or {})

    def stat_path(self, container_id: str, path: str) -> PathStat | None:
        """The stat of `path` in the container, or None when nothing is there."""
        api = self.client.api
        with self._errors(f"look at {path} in the container"):
            # HEAD on the archive: the stat alone, in a few ms. The SDK has no call for it, and a GET (its
            # get_archive) costs Docker 60 ms and more; so through the client's public requests interface.
            response = api.head(f"{api.base_url}/v{api.api_version}/containers/{quote(container_id, safe='/:')}"
                                "/archive", params={"path": path})
            if response.status_code == 404:
                api.inspect_container(container_id)  # a missing container is an error, a missing path is not
                return None
            _raise_for_status(response)
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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.client.api.inspect_container(container_id)
            except docker.errors.NotFound:
                return
            time.sleep(0.1)
        raise ProviderError(f"container {container_id[:12]} was still being removed after {timeout:.0f} s")

    def inspect(self, container_id: str) -> ContainerState:
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
        api = self.client.api
        with self._errors(f"run {argv[0]}"):
            exec_id = api.exec_create(container_id, argv, environment=env or None, workdir=workdir,
                                      stdout=True, stderr=True, stdin=stdin is not None)["Id"]
            connection = api.exec_start(exec_id, socket=True)
        sock = _socket_of(connection, self.timeout)
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
            _close_quietly(sock)
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
        if not in_container(pid, container_id):
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
    def __init__(self, stream: Any, engine: DockerEngine) -> None:
        self._stream = stream
        self._engine = engine

    def __iter__(self) -> Iterator[ContainerEvent]:
        with self._engine._errors("follow Docker's events"):
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

    def __init__(self, engine: DockerEngine, exec_id: str, connection: Any) -> None:
        self.engine = engine
        self.exec_id = exec_id
        self._connection = connection
        self._socket = _socket_of(connection, engine.timeout)
        self._closing = threading.Lock()
        self._closed = False

    def read(self) -> bytes:
        try:
            return self._socket.recv(65536)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        try:
            self._socket.sendall(data)
        except OSError as exc:
            raise ProviderError(f"the terminal is closed: {exc}") from exc

    def resize(self, cols: int, rows: int) -> None:
        with self.engine._errors("resize the terminal"):
            self.engine.client.api.exec_resize(self.exec_id, height=rows, width=cols)

    def exit_code(self, wait: float = 5.0) -> int | None:
        """The command's exit code once it has ended (Docker may need a moment after the stream closes)."""
        deadline = time.monotonic() + wait
        while True:
            with self.engine._errors("read the exit code"):
                info = self.engine.client.api.exec_inspect(self.exec_id)
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
            for step in (lambda: self._socket.shutdown(socket.SHUT_RDWR), self._socket.close, self._connection.close):
                try:
                    step()
                except OSError:
                    pass
            try:
                self.engine._kill_exec(self.exec_id)
            except VmhostError as exc:
                log.warning("could not end terminal command %s: %s", self.exec_id, exc.detail)


class DockerLogStream:
    def __init__(self, engine: DockerEngine, stream: Any) -> None:
        self.engine = engine
        self._stream = stream
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            with self.engine._errors("read the container's output"):
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


def _socket_of(connection: Any, timeout: float) -> Any:
    """Something to recv, sendall and shutdown on, for exec_start(socket=True)'s connection: the connection
    itself when it can (a socket, an SSH channel), else (the SDK hands a socket.SocketIO over a Unix socket
    or plain TCP) a socket on a duplicate of its descriptor, with the connection's timeout (the client's),
    to be closed apart from it: a shutdown through it ends the connection for both."""
    if hasattr(connection, "recv"):
        return connection
    sock = socket.socket(fileno=os.dup(connection.fileno()))
    sock.settimeout(timeout)
    return sock


def _close_quietly(connection: Any) -> None:
    for step in (lambda: connection.shutdown(socket.SHUT_RDWR), connection.close):
        try:
            step()
        except (OSError, AttributeError):
            pass


def _raise_for_status(response: requests.Response) -> None:
    """An error status as the SDK raises it (APIError, NotFound for 404)."""
    try:
        response.raise_for_status()
    except requests.exceptions.HTTPError as exc:
        docker.errors.create_api_error_from_http_exception(exc)  # raises


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
