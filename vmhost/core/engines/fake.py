"""An engine kept in memory, for tests: everything the orchestrator asks of a container engine, with
no Docker behind it.

It keeps containers (created, running, exited, removed), volumes, networks and images; runs commands
from a small table of scripted answers (`on_exec`; `sleep N` sleeps, anything else succeeds silently);
keeps the files copied in and out of containers as tar archives; delivers container events and logs.
Faults are injected by the test: the engine going away (`go_away`), a call that hangs (`hang`), a call
that fails (`fail_next`), a container that dies (`die`), and the calling daemon dying in the middle of
a call (`crash_at`). Every method may be called from any thread.
"""

from __future__ import annotations

import fnmatch
import io
import itertools
import math
import posixpath
import queue
import re
import secrets
import tarfile
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator
from dataclasses import dataclass, field
from typing import IO, TypeVar

from vmhost.core.engines import (
    MANAGED_KINDS,
    WATCHED_ACTIONS,
    CommandOutcome,
    CommittedImage,
    ContainerEvent,
    ContainerSpec,
    Engine,
    EventStream,
    LogStream,
    ManagedObject,
    NetworkSpec,
    OutputCallback,
    PathStat,
    Terminal,
)
from vmhost.core.models import ContainerState
from vmhost.errors import DockerUnavailable, ProviderError

T = TypeVar("T")

ENGINE_URL = "fake://engine"
MOUNT = "/workspace"  # where a container's volume is mounted (ContainerSpec.volume)
KILLED = 137  # the exit code of a command or container killed with SIGKILL
STOPPED = 143  # the exit code of a container stopped with SIGTERM
CANCEL_POLL = 0.01  # seconds between looks at a running command's cancel event
# Go's os.FileMode bits, as Docker reports them in a path's stat (see PathStat.kind)
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
ENGINE_METHODS = frozenset(name for name in vars(Engine) if not name.startswith("_"))  # what faults apply to
_SLEEP = re.compile(r"(?:/bin/sh -c )?sleep (\d+(?:\.\d+)?|infinity)")


class SimulatedCrash(BaseException):
    """What a call set up with `crash_at` raises: the daemon "dies" there. Not an Exception, so nothing
    in vmhost catches it, and the operation that made the call stays as a real crash leaves it."""


@dataclass(frozen=True)
class ExecRule:
    """A scripted answer to the commands whose space-joined argv matches `pattern` (fnmatch)."""

    pattern: str
    exit_code: int = 0
    output: bytes = b""
    stderr: bytes = b""
    seconds: float = 0.0  # how long the command runs after writing its output
    error: str | None = None  # it could not start: this reason, with `exit_code`, and no output


@dataclass(frozen=True)
class ExecRecord:
    """A command the engine was asked to run."""

    container_id: str
    argv: tuple[str, ...]
    env: dict[str, str]
    workdir: str | None
    stdin: bytes | None


@dataclass(frozen=True)
class ContainerInfo:
    """What a test sees of a container."""

    id: str
    name: str
    status: str  # created, running, exited or removed
    image: str
    labels: dict[str, str]
    volume: str
    network: str | None
    exit_code: int | None
    starts: int  # how many times it was started (a restart counts)


class Hang:
    """While this is armed, every call of one method blocks until `release()`, or for at most `timeout`
    seconds, after which it fails the way a request to an engine that does not answer fails."""

    def __init__(self, method: str, timeout: float | None) -> None:
        self.method = method
        self.timeout = timeout
        self.entered = threading.Event()  # set once a call is blocked here
        self._released = threading.Event()

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def release(self) -> None:
        self._released.set()

    def block(self, doing: str) -> None:
        self.entered.set()
        if not self._released.wait(self.timeout):
            raise DockerUnavailable(f"Docker engine at {ENGINE_URL} does not answer ({doing}): "
                                    f"timed out after {self.timeout:g} s")


@dataclass(frozen=True)
class _Fault:
    error: BaseException
    fired: threading.Event


@dataclass(frozen=True)
class _Entry:
    """A file, directory or link in a container's filesystem or a volume."""

    type: bytes  # a tarfile type: REGTYPE, DIRTYPE, SYMTYPE, ...
    mode: int
    data: bytes = b""
    linkname: str = ""
    mtime: float = 0.0


Files = dict[str, _Entry]  # absolute path (inside a volume: relative to its mount) -> entry


@dataclass(eq=False)
class _Image:
    id: str
    tags: list[str]
    labels: dict[str, str]
    files: Files = field(default_factory=dict)


@dataclass(eq=False)
class _Volume:
    name: str
    labels: dict[str, str]
    files: Files = field(default_factory=dict)


@dataclass(eq=False)
class _Network:
    id: str
    name: str
    labels: dict[str, str]


@dataclass(eq=False)
class _Container:
    id: str
    spec: ContainerSpec
    image: _Image
    files: Files
    status: str = "created"
    exit_code: int | None = None
    starts: int = 0
    ports: dict[str, str] = field(default_factory=dict)
    logs: list[bytes] = field(default_factory=list)  # one line each


@dataclass(eq=False)
class _Exec:
    container_id: str
    argv: tuple[str, ...]
    stopped: threading.Event = field(default_factory=threading.Event)  # its container stopped or went


class FakeEngine:
    """An engine in memory with the interface of DockerEngine (see the module's docstring)."""

    def __init__(self, images: Collection[str] = (), cpus: int = 4) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified on every change of state
        self._cpus = cpus
        self._images: list[_Image] = []
        self._volumes: dict[str, _Volume] = {}
        self._networks: dict[str, _Network] = {}
        self._containers: list[_Container] = []  # removed ones too, oldest first
        self._rules: list[ExecRule] = []
        self._executed: list[ExecRecord] = []
        self._running: list[_Exec] = []
        self._streams: list[_EventStream] = []
        self._hangs: dict[str, Hang] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._away = False
        self._ports = itertools.count(32768)
        for image in images:
            self.add_image(image)

    # -- what tests set up and look at ----------------------------------------------------------

    def add_image(self, name: str, labels: dict[str, str] | None = None) -> None:
        """An image on the engine, as if pulled or built (with an empty filesystem)."""
        with self._lock:
            self._images.append(_Image(id=_new_id("sha256:"), tags=[_tagged(name)], labels=dict(labels or {})))
            self._changed.notify_all()

    def on_exec(self, pattern: str, exit_code: int = 0, output: str | bytes = b"", stderr: str | bytes = b"",
                seconds: float = 0.0, error: str | None = None) -> None:
        """How the commands matching `pattern` (fnmatch over the space-joined argv) answer from now on;
        the latest rule that matches wins."""
        with self._lock:
            self._rules.append(ExecRule(pattern, exit_code, _bytes(output), _bytes(stderr), seconds, error))

    def container(self, ref: str) -> ContainerInfo:
        """A container by id or name (the live one of that name, else the last removed one)."""
        with self._lock:
            found = self._find_container(ref) or next(
                (c for c in reversed(self._containers) if c.id == ref or c.spec.name == ref), None)
            if found is None:
                raise KeyError(f"no container {ref!r}")
            return _info(found)

    def containers(self, labels: dict[str, str] | None = None) -> list[ContainerInfo]:
        """Every container ever created, removed ones too, oldest first; those carrying `labels`."""
        with self._lock:
            return [_info(c) for c in self._containers if _has_labels(c.spec.labels, labels or {})]

    def volumes(self) -> set[str]:
        with self._lock:
            return set(self._volumes)

    def networks(self) -> set[str]:
        with self._lock:
            return set(self._networks)

    def images(self) -> set[str]:
        with self._lock:
            return {tag for image in self._images for tag in image.tags}

    def executed(self) -> list[ExecRecord]:
        """Every command the engine was asked to run, in order."""
        with self._lock:
            return list(self._executed)

    def running_commands(self) -> list[tuple[str, ...]]:
        """The argv of each command running now."""
        with self._lock:
            return [execution.argv for execution in self._running]

    def write_log(self, ref: str, data: str | bytes) -> None:
        """Output of a container's own command, for `logs`."""
        with self._lock:
            container = self._container(ref, "write the container's output")
            container.logs.extend(_bytes(data).splitlines(keepends=True))
            self._changed.notify_all()

    def wait_for(self, condition: Callable[[], T], timeout: float = 5.0) -> T:
        """Block until `condition()` (called with the engine's state locked, after each change) is true;
        returns its value. TimeoutError after `timeout` seconds."""
        with self._changed:
            value = self._changed.wait_for(condition, timeout)
        if not value:
            raise TimeoutError(f"the fake engine did not reach the awaited state within {timeout:g} s")
        return value

    def close(self) -> None:
        """Release every hang and end every event stream, so no thread stays blocked on the engine."""
        with self._lock:
            hangs, self._hangs = list(self._hangs.values()), {}
            streams, self._streams = self._streams, []
        for hang in hangs:
            hang.release()
        for stream in streams:
            stream.end()

    # -- faults ---------------------------------------------------------------------------------

    def go_away(self) -> None:
        """The engine stops answering: every call raises DockerUnavailable, open event streams break."""
        with self._lock:
            self._away = True
            streams, self._streams = self._streams, []
            self._changed.notify_all()
        for stream in streams:
            stream.end(self._unavailable("follow Docker's events"))

    def come_back(self) -> None:
        with self._lock:
            self._away = False
            self._changed.notify_all()

    def hang(self, method: str, timeout: float | None = None) -> Hang:
        """Make every call of `method` block until the returned Hang is released (or `timeout` passes)."""
        _check_method(method)
        hang = Hang(method, timeout)
        with self._lock:
            self._hangs[method] = hang
        return hang

    def fail_next(self, method: str, error: BaseException) -> threading.Event:
        """The next call of `method` raises `error` instead of doing anything. The event is set when it has."""
        _check_method(method)
        fault = _Fault(error, threading.Event())
        with self._lock:
            self._faults.setdefault(method, []).append(fault)
        return fault.fired

    def crash_at(self, method: str) -> threading.Event:
        """The daemon dies during the next call of `method` (see SimulatedCrash); the event is set then."""
        return self.fail_next(method, SimulatedCrash(f"the daemon died during {method}"))

    def die(self, ref: str, exit_code: int = KILLED) -> None:
        """The container's command ends on its own: it goes to exited, with a `die` event."""
        with self._lock:
            container = self._container(ref, "kill the container")
            if container.status == "running":
                self._halt(container, exit_code, ("die",))

    # -- the engine's interface -----------------------------------------------------------------

    def ping(self) -> None:
        self._enter("ping", "ping Docker")

    def cpu_count(self) -> int:
        self._enter("cpu_count", "read Docker's CPU count")
        return self._cpus

    def data_root(self) -> str | None:
        """None: like an engine on another host, this one has no data directory here."""
        self._enter("data_root", "read Docker's data directory")
        return None

    def image_present(self, image: str) -> bool:
        self._enter("image_present", f"find image {image}")
        with self._lock:
            return self._find_image(image) is not None

    def ensure_image(self, image: str) -> None:
        """No registry is reachable: an image not on the engine cannot be pulled."""
        self._enter("ensure_image", f"find image {image}")
        with self._lock:
            if self._find_image(image) is None:
                raise ProviderError(f"image {image} is not on this host and could not be pulled: "
                                    f"pull access denied for {image}, repository does not exist")

    def remove_image(self, image: str) -> bool:
        """Remove an image unless a container still uses it (then False)."""
        self._enter("remove_image", f"remove image {image}")
        with self._lock:
            found = self._find_image(image)
            if found is None:
                return True
            if any(c.image is found for c in self._live()):
                return False
            self._images.remove(found)
            self._changed.notify_all()
            return True

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        self._enter("create_volume", f"create volume {name}")
        with self._lock:
            self._volumes.setdefault(name, _Volume(name, dict(labels)))
            self._changed.notify_all()

    def remove_volume(self, name: str) -> None:
        doing = f"remove volume {name}"
        self._enter("remove_volume", doing)
        with self._lock:
            users = [c.id for c in self._live() if c.spec.volume == name]
            if users:
                raise ProviderError(f"cannot {doing}: remove {name}: volume is in use - [{', '.join(users)}]")
            self._volumes.pop(name, None)
            self._changed.notify_all()

    def ensure_network(self, network: NetworkSpec) -> None:
        self._enter("ensure_network", f"create network {network.name}")
        with self._lock:
            if network.name not in self._networks:
                self._networks[network.name] = _Network(_new_id(), network.name, dict(network.labels))
                self._changed.notify_all()

    def remove_network(self, name: str) -> None:
        """Remove a network; one missing, or still joined by a running container, is left alone."""
        self._enter("remove_network", f"remove network {name}")
        with self._lock:
            network = self._find_network(name)
            if network is None or any(c.spec.network == network.name and c.status == "running"
                                      for c in self._live()):
                return
            del self._networks[network.name]
            self._changed.notify_all()

    def create_container(self, spec: ContainerSpec) -> str:
        doing = f"create container {spec.name}"
        self._enter("create_container", doing)
        with self._lock:
            leftover = self._find_container(spec.name)  # of an interrupted attempt
            if leftover is not None:
                self._remove(leftover)
            image = self._find_image(spec.image)
            if image is None:
                raise ProviderError(f"cannot {doing}: No such image: {spec.image}", missing=True)
            if spec.network is not None and spec.network not in self._networks:
                raise ProviderError(f"cannot {doing}: network {spec.network} not found", missing=True)
            self._volumes.setdefault(spec.volume, _Volume(spec.volume, {}))  # Docker makes a missing one
            container = _Container(id=_new_id(), spec=spec, image=image, files=dict(image.files))
            self._containers.append(container)
            self._changed.notify_all()
            return container.id

    def start(self, container_id: str) -> None:
        doing = "start the container"
        self._enter("start", doing)
        with self._lock:
            self._start(self._container(container_id, doing), doing)

    def stop(self, container_id: str, timeout: int) -> None:
        doing = "stop the container"
        self._enter("stop", doing)
        with self._lock:
            container = self._container(container_id, doing)
            if container.status == "running":
                self._halt(container, STOPPED, ("die", "stop"))

    def restart(self, container_id: str, timeout: int) -> None:
        doing = "restart the container"
        self._enter("restart", doing)
        with self._lock:
            container = self._container(container_id, doing)
            if container.status == "running":
                self._halt(container, STOPPED, ("die", "stop"))
            self._start(container, doing)

    def remove_container(self, container_id: str) -> None:
        self._enter("remove_container", "remove the container")
        with self._lock:
            container = self._find_container(container_id)
            if container is not None:
                self._remove(container)

    def inspect(self, container_id: str) -> ContainerState:
        self._enter("inspect", "inspect the container")
        with self._lock:
            container = self._find_container(container_id)
            if container is None:
                return ContainerState(exists=False)
            return ContainerState(exists=True, running=container.status == "running", status=container.status,
                                  ports=dict(container.ports), container_id=container.id)

    def list_managed(self, labels: dict[str, str], kinds: Collection[str] = MANAGED_KINDS) -> list[ManagedObject]:
        self._enter("list_managed", "list vmhost's Docker objects")
        found: list[ManagedObject] = []
        with self._lock:
            if "container" in kinds:
                found += [ManagedObject("container", c.id, c.spec.name, dict(c.spec.labels)) for c in self._live()
                          if _has_labels(c.spec.labels, labels)]
            if "volume" in kinds:
                found += [ManagedObject("volume", v.name, v.name, dict(v.labels)) for v in self._volumes.values()
                          if _has_labels(v.labels, labels)]
            if "image" in kinds:
                found += [ManagedObject("image", i.id, i.tags[0], dict(i.labels)) for i in self._images
                          if _has_labels(i.labels, labels)]
            if "network" in kinds:
                found += [ManagedObject("network", n.id, n.name, dict(n.labels)) for n in self._networks.values()
                          if _has_labels(n.labels, labels)]
        return found

    def commit(self, container_id: str, repository: str, tag: str, labels: dict[str, str]) -> CommittedImage:
        """An image of the container's filesystem (not its volume), labelled like the container's image
        plus `labels`."""
        doing = "commit the container's filesystem"
        self._enter("commit", doing)
        with self._lock:
            container = self._container(container_id, doing)
            added = sum(len(entry.data) for path, entry in container.files.items()
                        if container.image.files.get(path) != entry)
            name = f"{repository}:{tag}"
            for image in self._images:  # the tag moves to the new image
                if name in image.tags:
                    image.tags.remove(name)
            image = _Image(id=_new_id("sha256:"), tags=[name], labels={**container.image.labels, **labels},
                           files=dict(container.files))
            self._images.append(image)
            self._changed.notify_all()
            return CommittedImage(id=image.id, added_bytes=added)

    def put_archive(self, container_id: str, path: str, archive: IO[bytes]) -> None:
        """Unpack a tar into the directory `path` (what lands under /workspace goes to the volume)."""
        doing = f"copy files into {path}"
        self._enter("put_archive", doing)
        data = archive.read()
        target = posixpath.normpath(path)
        with self._lock:
            container = self._container(container_id, doing)
            stat = self._stat(container, target)
            if stat is None or stat.kind != "directory":
                raise ProviderError(f"cannot {doing}: Could not find the file {path} in container "
                                    f"{container.spec.name}", missing=True)
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
                    for member in tar:
                        content = tar.extractfile(member) if member.isfile() else None
                        files, key = self._files_at(container, posixpath.normpath(posixpath.join(target, member.name)))
                        if key != "/":
                            files[key] = _Entry(member.type, member.mode, content.read() if content else b"",
                                                member.linkname, member.mtime)
            except tarfile.TarError as exc:
                raise ProviderError(f"cannot {doing}: the archive is not a tar: {exc}") from exc
            self._changed.notify_all()

    def get_archive(self, container_id: str, path: str) -> tuple[Generator[bytes, None, None], PathStat]:
        """A tar of `path` (its entries named from its base name, as Docker does), with its stat."""
        doing = f"copy {path} out of the container"
        self._enter("get_archive", doing)
        top = posixpath.normpath(path)
        with self._lock:
            container = self._container(container_id, doing)
            stat = self._stat(container, top)
            if stat is None:
                raise ProviderError(f"cannot {doing}: Could not find the file {path} in container "
                                    f"{container.spec.name}", missing=True)
            data = _tar(self._visible(container), top)
        return _chunks(data), stat

    def stat_path(self, container_id: str, path: str) -> PathStat | None:
        doing = f"look at {path} in the container"
        self._enter("stat_path", doing)
        with self._lock:
            return self._stat(self._container(container_id, doing), posixpath.normpath(path))

    def run_command(self, container_id: str, argv: list[str], *, on_output: OutputCallback,
                    env: dict[str, str] | None = None, workdir: str | None = None, stdin: bytes | None = None,
                    timeout: float | None = None, cancel: threading.Event | None = None) -> CommandOutcome:
        """Run `argv` as the rules of `on_exec` say; a running command is killed (exit code 137) by
        `timeout`, `cancel`, or its container stopping."""
        doing = f"run {argv[0]}"
        self._enter("run_command", doing)
        with self._lock:
            container = self._container(container_id, doing)
            if container.status != "running":
                raise ProviderError(f"cannot {doing}: container {container.id} is not running")
            command = " ".join(argv)
            rule = next((r for r in reversed(self._rules) if fnmatch.fnmatchcase(command, r.pattern)), None)
            if rule is None:
                slept = _SLEEP.fullmatch(command)
                rule = ExecRule(command, seconds=math.inf if slept and slept[1] == "infinity"
                                else float(slept[1]) if slept else 0.0)
            execution = _Exec(container.id, tuple(argv))
            self._executed.append(ExecRecord(container.id, tuple(argv), dict(env or {}), workdir, stdin))
            self._running.append(execution)
            self._changed.notify_all()
        try:
            if rule.error is not None:
                return CommandOutcome(exit_code=rule.exit_code, error=rule.error)
            for stream, data in (("stdout", rule.output), ("stderr", rule.stderr)):
                if data:
                    on_output(stream, data)
            killed = _run_for(rule.seconds, timeout, cancel, execution.stopped)
            return killed or CommandOutcome(exit_code=rule.exit_code)
        finally:
            with self._lock:
                self._running.remove(execution)
                self._changed.notify_all()

    def open_terminal(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
                      workdir: str | None = None) -> Terminal:
        """A terminal that echoes what is written to it, until closed."""
        doing = f"open a terminal running {argv[0] if argv else 'a shell'}"
        self._enter("open_terminal", doing)
        with self._lock:
            container = self._container(container_id, doing)
            if container.status != "running":
                raise ProviderError(f"cannot {doing}: container {container.id} is not running")
        return _Terminal()

    def logs(self, container_id: str, follow: bool = False, tail: int | None = None) -> LogStream:
        self._enter("logs", "read the container's output")
        with self._lock:
            container = self._container(container_id, "read the container's output")
            start = 0 if tail is None else max(len(container.logs) - tail, 0)
        return _LogStream(self, container, start, follow)

    def container_events(self, labels: dict[str, str]) -> EventStream:
        self._enter("container_events", "follow Docker's events")
        stream = _EventStream(self, dict(labels))
        with self._lock:
            self._streams.append(stream)
        return stream

    # -- inside ---------------------------------------------------------------------------------

    def _enter(self, method: str, doing: str) -> None:
        """What a call meets before it does anything: a hang, the engine away, an injected fault."""
        with self._lock:
            hang = self._hangs.get(method)
        if hang is not None and not hang.released:
            hang.block(doing)
        with self._lock:
            if self._away:
                raise self._unavailable(doing)
            faults = self._faults.get(method)
            fault = faults.pop(0) if faults else None
        if fault is not None:
            fault.fired.set()
            raise fault.error

    @staticmethod
    def _unavailable(doing: str) -> DockerUnavailable:
        """The error DockerEngine raises when its engine does not answer."""
        return DockerUnavailable(f"Docker engine at {ENGINE_URL} does not answer ({doing}): "
                                 "Connection refused")

    def _live(self) -> list[_Container]:
        return [c for c in self._containers if c.status != "removed"]

    def _find_container(self, ref: str) -> _Container | None:
        return next((c for c in self._live() if c.id == ref or c.spec.name == ref
                     or (len(ref) >= 12 and c.id.startswith(ref))), None)

    def _container(self, ref: str, doing: str) -> _Container:
        container = self._find_container(ref)
        if container is None:
            raise ProviderError(f"cannot {doing}: No such container: {ref}", missing=True)
        return container

    def _find_image(self, ref: str) -> _Image | None:
        tagged = _tagged(ref)
        return next((i for i in self._images if i.id == ref or tagged in i.tags), None)

    def _find_network(self, ref: str) -> _Network | None:
        return next((n for n in self._networks.values() if ref in (n.id, n.name)), None)

    def _start(self, container: _Container, doing: str) -> None:
        if container.status == "running":
            return
        if container.spec.network is not None and container.spec.network not in self._networks:
            raise ProviderError(f"cannot {doing}: network {container.spec.network} not found", missing=True)
        container.status, container.exit_code = "running", None
        container.starts += 1
        container.ports = {_port_key(port): f"{container.spec.publish_address}:{next(self._ports)}"
                           for port in container.spec.ports}
        self._emit(container, "start")

    def _halt(self, container: _Container, exit_code: int, actions: tuple[str, ...]) -> None:
        container.status, container.exit_code, container.ports = "exited", exit_code, {}
        for execution in self._running:
            if execution.container_id == container.id:
                execution.stopped.set()
        for action in actions:
            self._emit(container, action)

    def _remove(self, container: _Container) -> None:
        if container.status == "running":
            self._halt(container, KILLED, ("die",))
        container.status = "removed"
        self._emit(container, "destroy")

    def _emit(self, container: _Container, action: str) -> None:
        """Record a change of a container: to waiters, and as an event to the streams that want it."""
        self._changed.notify_all()
        if action not in WATCHED_ACTIONS:
            return
        attributes = {**container.spec.labels, "name": container.spec.name, "image": container.spec.image}
        for stream in self._streams:
            if _has_labels(container.spec.labels, stream.labels):
                stream.put(ContainerEvent(action=action, container_id=container.id, labels=attributes))

    def _forget_stream(self, stream: _EventStream) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)

    def _files_at(self, container: _Container, path: str) -> tuple[Files, str]:
        """The file table `path` lives in (the volume's under /workspace, else the container's own) and
        its key there ("/" for the root of either)."""
        if path == MOUNT or path.startswith(MOUNT + "/"):
            return self._volumes[container.spec.volume].files, "/" + path[len(MOUNT):].lstrip("/")
        return container.files, path

    def _visible(self, container: _Container) -> Files:
        """Everything the container sees, by absolute path: its own files, the volume over /workspace."""
        own = {path: entry for path, entry in container.files.items()
               if path != MOUNT and not path.startswith(MOUNT + "/")}
        mounted = {MOUNT + path: entry for path, entry in self._volumes[container.spec.volume].files.items()}
        return {**own, MOUNT: _Entry(tarfile.DIRTYPE, 0o755), **mounted}

    def _stat(self, container: _Container, path: str) -> PathStat | None:
        visible = self._visible(container)
        entry = visible.get(path)
        if entry is None and (path == "/" or any(p.startswith(path + "/") for p in visible)):
            entry = _Entry(tarfile.DIRTYPE, 0o755)  # a directory only implied by what is under it
        if entry is None:
            return None
        kind = {tarfile.DIRTYPE: GO_MODE_DIR, tarfile.SYMTYPE: GO_MODE_SYMLINK}.get(entry.type, 0)
        return PathStat(name=posixpath.basename(path) or "/", size=len(entry.data), mode=entry.mode | kind,
                        mtime=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.mtime)),
                        link_target=entry.linkname)


class _EventStream:
    def __init__(self, engine: FakeEngine, labels: dict[str, str]) -> None:
        self.labels = labels
        self._engine = engine
        self._items: queue.SimpleQueue[ContainerEvent | BaseException | None] = queue.SimpleQueue()

    def put(self, event: ContainerEvent) -> None:
        self._items.put(event)

    def end(self, error: BaseException | None = None) -> None:
        """End the iteration, by raising `error` when given."""
        self._items.put(error)

    def __iter__(self) -> Iterator[ContainerEvent]:
        while True:
            item = self._items.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._engine._forget_stream(self)
        self.end()


class _LogStream:
    """A container's output from line `start` on; following, it ends when the container stops running."""

    def __init__(self, engine: FakeEngine, container: _Container, start: int, follow: bool) -> None:
        self._engine = engine
        self._container = container
        self._next = start
        self._follow = follow
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        changed = self._engine._changed
        while True:
            with changed:
                changed.wait_for(lambda: self._closed or self._next < len(self._container.logs)
                                 or not (self._follow and self._container.status == "running"))
                lines = [] if self._closed else self._container.logs[self._next:]
                self._next += len(lines)
            if not lines:
                return
            yield b"".join(lines)

    def close(self) -> None:
        with self._engine._changed:
            self._closed = True
            self._engine._changed.notify_all()


class _Terminal:
    """A terminal that echoes its input; `close()` ends it with exit code 0."""

    def __init__(self) -> None:
        self._echo: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._closed = threading.Event()

    def read(self) -> bytes:
        return b"" if self._closed.is_set() else self._echo.get()

    def write(self, data: bytes) -> None:
        if self._closed.is_set():
            raise ProviderError("the terminal is closed")
        self._echo.put(data)

    def resize(self, cols: int, rows: int) -> None:
        pass

    def exit_code(self) -> int | None:
        return 0 if self._closed.is_set() else None

    def close(self) -> None:
        self._closed.set()
        self._echo.put(b"")


def _run_for(seconds: float, timeout: float | None, cancel: threading.Event | None,
             stopped: threading.Event) -> CommandOutcome | None:
    """Let a command run `seconds`; how it was killed, or None when it ran to its end."""
    now = time.monotonic()
    end = now + seconds
    kill_at = math.inf if timeout is None else now + timeout
    while True:
        now = time.monotonic()
        if cancel is not None and cancel.is_set():
            return CommandOutcome(exit_code=KILLED, cancelled=True)
        if stopped.is_set():
            return CommandOutcome(exit_code=KILLED)
        if now >= end:
            return None
        if now >= kill_at:
            return CommandOutcome(exit_code=KILLED, timed_out=True)
        wait = min(end, kill_at) - now
        if cancel is not None:
            wait = min(wait, CANCEL_POLL)
        stopped.wait(None if math.isinf(wait) else wait)


def _tar(visible: Files, top: str) -> bytes:
    """A tar of `top` and what is under it, named from top's base name."""
    base = posixpath.basename(top) or "."
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if top not in visible:
            tar.addfile(_tar_info(base, _Entry(tarfile.DIRTYPE, 0o755)))
        prefix = top.rstrip("/") + "/"
        for path in sorted(visible):
            if path == top or path.startswith(prefix):
                entry = visible[path]
                info = _tar_info(posixpath.join(base, path[len(prefix):]) if path != top else base, entry)
                tar.addfile(info, io.BytesIO(entry.data) if entry.type in (tarfile.REGTYPE, tarfile.AREGTYPE)
                            else None)
    return buffer.getvalue()


def _tar_info(name: str, entry: _Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.mtime = entry.type, entry.mode, entry.linkname, entry.mtime
    info.size = len(entry.data) if entry.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    return info


def _chunks(data: bytes, size: int = 64 * 1024) -> Generator[bytes, None, None]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _info(container: _Container) -> ContainerInfo:
    return ContainerInfo(id=container.id, name=container.spec.name, status=container.status,
                         image=container.spec.image, labels=dict(container.spec.labels), volume=container.spec.volume,
                         network=container.spec.network, exit_code=container.exit_code, starts=container.starts)


def _check_method(method: str) -> None:
    if method not in ENGINE_METHODS:
        raise ValueError(f"{method!r} is not a method of the engine; use one of {', '.join(sorted(ENGINE_METHODS))}")


def _has_labels(labels: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())


def _tagged(ref: str) -> str:
    """An image reference with its tag (`latest` when it names none), as Docker reads it."""
    if ref.startswith("sha256:") or ":" in ref.rpartition("/")[2]:
        return ref
    return f"{ref}:latest"


def _port_key(port: str) -> str:
    return port if "/" in port else f"{port}/tcp"


def _new_id(prefix: str = "") -> str:
    return prefix + secrets.token_hex(32)


def _bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data
