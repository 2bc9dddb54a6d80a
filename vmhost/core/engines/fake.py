"""An engine kept in memory, for tests: everything the orchestrator asks of a container engine, with
no Docker behind it.

It keeps containers (created, running, exited, removed), volumes, networks and images (fake_objects.py);
runs commands from a small table of scripted answers (`on_exec`, fake_commands.py); keeps the files
copied in and out of containers as tar archives (fake_files.py); delivers container events and logs
(fake_streams.py). Faults are injected by the test (fake_faults.py): the engine going away (`go_away`),
a call that hangs (`hang`), a call that fails (`fail_next`), a container that dies (`die`), and the
calling daemon dying in the middle of a call (`crash_at`). Every method may be called from any thread.
"""

from __future__ import annotations

import dataclasses
import itertools
import posixpath
import tarfile
import threading
from collections.abc import Callable, Collection, Generator
from typing import IO, TypeVar

from vmhost.core.engines import (
    LOCAL_NODE,
    MANAGED_KINDS,
    ONE_HOST_HAS_NO_NODES,
    UNREACHABLE,
    WATCHED_ACTIONS,
    CommandOutcome,
    CommittedImage,
    ContainerEvent,
    ContainerSpec,
    EventStream,
    LogStream,
    ManagedObject,
    NetworkSpec,
    NodeInfo,
    OutputCallback,
    PathStat,
    Process,
    Terminal,
)
from vmhost.core.engines.fake_commands import KILLED, ExecRecord, ExecRule, RunningCommand, rule_for, run_for
from vmhost.core.engines.fake_faults import Faults, Hang, SimulatedCrash, unavailable
from vmhost.core.engines.fake_files import Files, chunks, stat_of, tar_of, unpack, visible
from vmhost.core.engines.fake_objects import (
    Container,
    ContainerInfo,
    Image,
    Network,
    Volume,
    has_labels,
    new_id,
    tagged,
)
from vmhost.core.engines.fake_streams import EchoProcess, EchoTerminal, FakeEventStream, FakeLogStream
from vmhost.core.models import ContainerState
from vmhost.errors import ContainerNotRunning, InvalidInput, ProviderError

T = TypeVar("T")

STOPPED = 143  # the exit code of a container stopped with SIGTERM


class FakeEngine:
    """An engine in memory with the interface of DockerEngine (see the module's docstring)."""

    def __init__(self, images: Collection[str] = (), cpus: int = 4) -> None:
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified on every change of state
        self._cpus = cpus
        self._node_state = "ready"
        self._images: list[Image] = []
        self._volumes: dict[str, Volume] = {}
        self._networks: dict[str, Network] = {}
        self._containers: list[Container] = []  # removed ones too, oldest first
        self._rules: list[ExecRule] = []
        self._executed: list[ExecRecord] = []
        self._running: list[RunningCommand] = []
        self._streams: list[FakeEventStream] = []
        self._faults = Faults()
        self._ports = itertools.count(32768)
        for image in images:
            self.add_image(image)

    # -- what tests set up and look at ----------------------------------------------------------

    def add_image(self, name: str, labels: dict[str, str] | None = None) -> None:
        """An image on the engine, as if pulled or built (with an empty filesystem)."""
        with self._lock:
            self._images.append(Image(id=new_id("sha256:"), tags=[tagged(name)], labels=dict(labels or {})))
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
            return ContainerInfo.of(found)

    def containers(self, labels: dict[str, str] | None = None) -> list[ContainerInfo]:
        """Every container ever created, removed ones too, oldest first; those carrying `labels`."""
        with self._lock:
            return [ContainerInfo.of(c) for c in self._containers if has_labels(c.spec.labels, labels or {})]

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
        self._faults.release_hangs()
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.end()

    # -- faults ---------------------------------------------------------------------------------

    def go_away(self) -> None:
        """The engine stops answering: every call raises DockerUnavailable, open event streams break."""
        with self._lock:
            self._faults.away = True
            streams, self._streams = self._streams, []
            self._changed.notify_all()
        for stream in streams:
            stream.end(unavailable("follow Docker's events"))

    def come_back(self) -> None:
        with self._lock:
            self._faults.away = False
            self._changed.notify_all()

    def hang(self, method: str, timeout: float | None = None) -> Hang:
        """Make every call of `method` block until the returned Hang is released (or `timeout` passes)."""
        return self._faults.hang(method, timeout)

    def fail_next(self, method: str, error: BaseException) -> threading.Event:
        """The next call of `method` raises `error` instead of doing anything. The event is set when it has."""
        return self._faults.fail_next(method, error)

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
        self._faults.enter("ping", "ping Docker")

    def cpu_count(self) -> int:
        self._faults.enter("cpu_count", "read Docker's CPU count")
        return self._cpus

    def data_root(self) -> str | None:
        """None: like an engine on another host, this one has no data directory here."""
        self._faults.enter("data_root", "read Docker's data directory")
        return None

    def image_present(self, image: str) -> bool:
        self._faults.enter("image_present", f"find image {image}")
        with self._lock:
            return self._find_image(image) is not None

    def ensure_image(self, image: str, report: Callable[[str], None] | None = None) -> None:
        """No registry is reachable: an image not on the engine cannot be pulled."""
        self._faults.enter("ensure_image", f"find image {image}")
        with self._lock:
            if self._find_image(image) is None:
                raise ProviderError(f"image {image} is not on this host and could not be pulled: "
                                    f"pull access denied for {image}, repository does not exist")

    def build_image(self, context: IO[bytes], *, dockerfile: str, tag: str, buildargs: dict[str, str],
                    target: str | None, labels: dict[str, str], memory_mb: int,
                    on_output: Callable[[str], None]) -> None:
        """Only the Dockerfile's FROM is built: the new image has its base image's files."""
        doing = f"build image {tag}"
        self._faults.enter("build_image", doing)
        with tarfile.open(fileobj=context) as tar:
            try:
                member = tar.extractfile(posixpath.normpath(dockerfile))
            except KeyError:
                member = None
            if member is None:
                raise ProviderError(f"the build of {tag} failed: Cannot locate specified Dockerfile: {dockerfile}")
            lines = member.read().decode().splitlines()
        base_ref = next((line.split()[1] for line in lines if line.upper().startswith("FROM ")), "")
        on_output(f"Step 1/1 : FROM {base_ref}")
        with self._lock:
            base = self._find_image(base_ref)
            if base is None:
                raise ProviderError(f"the build of {tag} failed: pull access denied for {base_ref}")
            name = tagged(tag)
            for image in self._images:
                if name in image.tags:
                    image.tags.remove(name)
            self._images.append(Image(id=new_id("sha256:"), tags=[name], labels={**base.labels, **labels},
                                      files=dict(base.files)))
            self._changed.notify_all()

    def remove_image(self, image: str) -> bool:
        """Remove an image unless a container still uses it (then False)."""
        self._faults.enter("remove_image", f"remove image {image}")
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
        self._faults.enter("create_volume", f"create volume {name}")
        with self._lock:
            self._volumes.setdefault(name, Volume(name, dict(labels)))
            self._changed.notify_all()

    def remove_volume(self, name: str) -> None:
        doing = f"remove volume {name}"
        self._faults.enter("remove_volume", doing)
        with self._lock:
            users = [c.id for c in self._live() if c.spec.volume == name]
            if users:
                raise ProviderError(f"cannot {doing}: remove {name}: volume is in use - [{', '.join(users)}]")
            self._volumes.pop(name, None)
            self._changed.notify_all()

    def ensure_network(self, network: NetworkSpec) -> None:
        self._faults.enter("ensure_network", f"create network {network.name}")
        with self._lock:
            if network.name not in self._networks:
                self._networks[network.name] = Network(new_id(), network.name, dict(network.labels))
                self._changed.notify_all()

    def remove_network(self, name: str) -> None:
        """Remove a network; one missing, or still joined by a running container, is left alone."""
        self._faults.enter("remove_network", f"remove network {name}")
        with self._lock:
            network = self._find_network(name)
            if network is None or any(c.spec.network == network.name and c.status == "running"
                                      for c in self._live()):
                return
            del self._networks[network.name]
            self._changed.notify_all()

    def move_network(self, container_id: str, leave: str, join: str) -> None:
        doing = f"move the container to network {join}"
        self._faults.enter("move_network", doing)
        with self._lock:
            container = self._container(container_id, doing)
            if join not in self._networks:
                raise ProviderError(f"cannot {doing}: network {join} not found", missing=True)
            if container.spec.network != join:  # one network per container here: joining is leaving
                container.spec = dataclasses.replace(container.spec, network=join)
            self._changed.notify_all()

    def create_container(self, spec: ContainerSpec) -> str:
        doing = f"create container {spec.name}"
        self._faults.enter("create_container", doing)
        with self._lock:
            leftover = self._find_container(spec.name)  # of an interrupted attempt
            if leftover is not None:
                self._remove(leftover)
            image = self._find_image(spec.image)
            if image is None:
                raise ProviderError(f"cannot {doing}: No such image: {spec.image}", missing=True)
            if spec.network is not None and spec.network not in self._networks:
                raise ProviderError(f"cannot {doing}: network {spec.network} not found", missing=True)
            self._volumes.setdefault(spec.volume, Volume(spec.volume, {}))  # Docker makes a missing one
            container = Container(id=new_id(), spec=spec, image=image, files=dict(image.files))
            self._containers.append(container)
            self._changed.notify_all()
            return container.id

    def start(self, container_id: str) -> None:
        doing = "start the container"
        self._faults.enter("start", doing)
        with self._lock:
            self._start(self._container(container_id, doing), doing)

    def stop(self, container_id: str, timeout: int) -> None:
        doing = "stop the container"
        self._faults.enter("stop", doing)
        with self._lock:
            container = self._container(container_id, doing)
            if container.status == "running":
                self._halt(container, STOPPED, ("die", "stop"))

    def restart(self, container_id: str, timeout: int) -> None:
        doing = "restart the container"
        self._faults.enter("restart", doing)
        with self._lock:
            container = self._container(container_id, doing)
            if container.status == "running":
                self._halt(container, STOPPED, ("die", "stop"))
            self._start(container, doing)

    def remove_container(self, container_id: str) -> None:
        self._faults.enter("remove_container", "remove the container")
        with self._lock:
            container = self._find_container(container_id)
            if container is not None:
                self._remove(container)

    def inspect(self, container_id: str) -> ContainerState:
        self._faults.enter("inspect", "inspect the container")
        with self._lock:
            container = self._find_container(container_id)
            if container is None:
                return ContainerState(exists=False)
            if self._node_state != "ready":
                return ContainerState(exists=True, status=UNREACHABLE, node=LOCAL_NODE,
                                      reason=f"its node fake is {self._node_state}")
            return ContainerState(exists=True, running=container.status == "running", status=container.status,
                                  ports=dict(container.ports), container_id=container.id, node=LOCAL_NODE)

    def set_node_state(self, state: str) -> None:
        """The one node goes down ("down") or comes back ("ready"), as a Swarm node does; its containers
        keep their state meanwhile."""
        self._node_state = state

    def nodes(self) -> list[NodeInfo]:
        self._faults.enter("nodes", "read Docker's host")
        return [NodeInfo(id=LOCAL_NODE, hostname="fake", address="memory", state=self._node_state, engine_url="memory",
                         cpus=self._cpus, memory_mb=4096, manager=True)]

    def set_node_engine(self, node_id: str, url: str) -> None:
        raise InvalidInput(ONE_HOST_HAS_NO_NODES)

    def node_problems(self, node_id: str, images: Collection[str]) -> list[str]:
        return [f"image {image} is not there" for image in images if not self.image_present(image)]

    def set_node_availability(self, node_id: str, availability: str) -> None:
        raise InvalidInput(ONE_HOST_HAS_NO_NODES)

    def container_address(self, container_id: str, network: str | None) -> str:
        """This host's loopback address: a test serves a running container's ports on it."""
        doing = "find the container's address"
        self._faults.enter("container_address", doing)
        with self._lock:
            self._running_container(container_id, doing)
        return "127.0.0.1"

    def list_managed(self, labels: dict[str, str], kinds: Collection[str] = MANAGED_KINDS) -> list[ManagedObject]:
        self._faults.enter("list_managed", "list vmhost's Docker objects")
        found: list[ManagedObject] = []
        with self._lock:
            if "container" in kinds:
                found += [ManagedObject("container", c.id, c.spec.name, dict(c.spec.labels)) for c in self._live()
                          if has_labels(c.spec.labels, labels)]
            if "volume" in kinds:
                found += [ManagedObject("volume", v.name, v.name, dict(v.labels)) for v in self._volumes.values()
                          if has_labels(v.labels, labels)]
            if "image" in kinds:
                found += [ManagedObject("image", i.id, i.tags[0], dict(i.labels)) for i in self._images
                          if has_labels(i.labels, labels)]
            if "network" in kinds:
                found += [ManagedObject("network", n.id, n.name, dict(n.labels)) for n in self._networks.values()
                          if has_labels(n.labels, labels)]
        return found

    def commit(self, container_id: str, repository: str, tag: str, labels: dict[str, str]) -> CommittedImage:
        """An image of the container's filesystem (not its volume), labelled like the container's image
        plus `labels`."""
        doing = "commit the container's filesystem"
        self._faults.enter("commit", doing)
        with self._lock:
            container = self._container(container_id, doing)
            added = sum(len(entry.data) for path, entry in container.files.items()
                        if container.image.files.get(path) != entry)
            name = f"{repository}:{tag}"
            for image in self._images:  # the tag moves to the new image
                if name in image.tags:
                    image.tags.remove(name)
            image = Image(id=new_id("sha256:"), tags=[name], labels={**container.image.labels, **labels},
                          files=dict(container.files))
            self._images.append(image)
            self._changed.notify_all()
            return CommittedImage(id=image.id, added_bytes=added)

    def put_archive(self, container_id: str, path: str, archive: IO[bytes]) -> None:
        """Unpack a tar into the directory `path` (what lands under /workspace goes to the volume)."""
        doing = f"copy files into {path}"
        self._faults.enter("put_archive", doing)
        data = archive.read()
        target = posixpath.normpath(path)
        with self._lock:
            container = self._container(container_id, doing)
            stat = stat_of(self._visible(container), target)
            if stat is None or stat.kind != "directory":
                raise ProviderError(f"cannot {doing}: Could not find the file {path} in container "
                                    f"{container.spec.name}", missing=True)
            try:
                unpack(data, target, container.files, self._volumes[container.spec.volume].files)
            except tarfile.TarError as exc:
                raise ProviderError(f"cannot {doing}: the archive is not a tar: {exc}") from exc
            self._changed.notify_all()

    def get_archive(self, container_id: str, path: str) -> tuple[Generator[bytes, None, None], PathStat]:
        """A tar of `path` (its entries named from its base name, as Docker does), with its stat."""
        doing = f"copy {path} out of the container"
        self._faults.enter("get_archive", doing)
        top = posixpath.normpath(path)
        with self._lock:
            container = self._container(container_id, doing)
            files = self._visible(container)
            stat = stat_of(files, top)
            if stat is None:
                raise ProviderError(f"cannot {doing}: Could not find the file {path} in container "
                                    f"{container.spec.name}", missing=True)
            data = tar_of(files, top)
        return chunks(data), stat

    def stat_path(self, container_id: str, path: str) -> PathStat | None:
        doing = f"look at {path} in the container"
        self._faults.enter("stat_path", doing)
        with self._lock:
            return stat_of(self._visible(self._container(container_id, doing)), posixpath.normpath(path))

    def run_command(self, container_id: str, argv: list[str], *, on_output: OutputCallback,
                    env: dict[str, str] | None = None, workdir: str | None = None, stdin: bytes | None = None,
                    timeout: float | None = None, cancel: threading.Event | None = None) -> CommandOutcome:
        """Run `argv` as the rules of `on_exec` say; a running command is killed (exit code 137) by
        `timeout`, `cancel`, or its container stopping."""
        doing = f"run {argv[0]}"
        self._faults.enter("run_command", doing)
        with self._lock:
            container = self._running_container(container_id, doing)
            rule = rule_for(self._rules, argv)
            execution = RunningCommand(container.id, tuple(argv))
            self._executed.append(ExecRecord(container.id, tuple(argv), dict(env or {}), workdir, stdin))
            self._running.append(execution)
            self._changed.notify_all()
        try:
            if rule.error is not None:
                return CommandOutcome(exit_code=rule.exit_code, error=rule.error)
            for stream, data in (("stdout", rule.output), ("stderr", rule.stderr)):
                if data:
                    on_output(stream, data)
            killed = run_for(rule.seconds, timeout, cancel, execution.stopped)
            return killed or CommandOutcome(exit_code=rule.exit_code)
        finally:
            with self._lock:
                self._running.remove(execution)
                self._changed.notify_all()

    def open_terminal(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
                      workdir: str | None = None) -> Terminal:
        """A terminal that echoes what is written to it, until closed."""
        doing = f"open a terminal running {argv[0] if argv else 'a shell'}"
        self._faults.enter("open_terminal", doing)
        with self._lock:
            self._running_container(container_id, doing)
        return EchoTerminal()

    def open_process(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
                     workdir: str | None = None) -> Process:
        """A command that writes its input back on stdout, and ends (exit code 0) at its input's end."""
        doing = f"run {argv[0] if argv else 'a command'}"
        self._faults.enter("open_process", doing)
        with self._lock:
            self._running_container(container_id, doing)
        return EchoProcess()

    def logs(self, container_id: str, follow: bool = False, tail: int | None = None) -> LogStream:
        self._faults.enter("logs", "read the container's output")
        with self._lock:
            container = self._container(container_id, "read the container's output")
            start = 0 if tail is None else max(len(container.logs) - tail, 0)
        return FakeLogStream(self._changed, container, start, follow)

    def container_events(self, labels: dict[str, str]) -> EventStream:
        self._faults.enter("container_events", "follow Docker's events")
        stream = FakeEventStream(dict(labels), self._forget_stream)
        with self._lock:
            self._streams.append(stream)
        return stream

    # -- inside ---------------------------------------------------------------------------------

    def _live(self) -> list[Container]:
        return [c for c in self._containers if c.status != "removed"]

    def _find_container(self, ref: str) -> Container | None:
        return next((c for c in self._live() if c.id == ref or c.spec.name == ref
                     or (len(ref) >= 12 and c.id.startswith(ref))), None)

    def _container(self, ref: str, doing: str) -> Container:
        container = self._find_container(ref)
        if container is None:
            raise ProviderError(f"cannot {doing}: No such container: {ref}", missing=True)
        return container

    def _running_container(self, ref: str, doing: str) -> Container:
        container = self._container(ref, doing)
        if container.status != "running":
            raise ContainerNotRunning(f"cannot {doing}: container {container.id[:12]} is not running")
        return container

    def _find_image(self, ref: str) -> Image | None:
        name = tagged(ref)
        return next((i for i in self._images if i.id == ref or name in i.tags), None)

    def _find_network(self, ref: str) -> Network | None:
        return next((n for n in self._networks.values() if ref in (n.id, n.name)), None)

    def _start(self, container: Container, doing: str) -> None:
        if container.status == "running":
            return
        if container.spec.network is not None and container.spec.network not in self._networks:
            raise ProviderError(f"cannot {doing}: network {container.spec.network} not found", missing=True)
        container.status, container.exit_code = "running", None
        container.starts += 1
        container.ports = {_port_key(port): f"{container.spec.publish_address}:{next(self._ports)}"
                           for port in container.spec.ports}
        self._emit(container, "start")

    def _halt(self, container: Container, exit_code: int, actions: tuple[str, ...]) -> None:
        container.status, container.exit_code, container.ports = "exited", exit_code, {}
        for execution in self._running:
            if execution.container_id == container.id:
                execution.stopped.set()
        for action in actions:
            self._emit(container, action)

    def _remove(self, container: Container) -> None:
        if container.status == "running":
            self._halt(container, KILLED, ("die",))
        container.status = "removed"
        self._emit(container, "destroy")

    def _emit(self, container: Container, action: str) -> None:
        """Record a change of a container: to waiters, and as an event to the streams that want it."""
        self._changed.notify_all()
        if action not in WATCHED_ACTIONS:
            return
        attributes = {**container.spec.labels, "name": container.spec.name, "image": container.spec.image}
        for stream in self._streams:
            if has_labels(container.spec.labels, stream.labels):
                stream.put(ContainerEvent(action=action, container_id=container.id, labels=attributes))

    def _forget_stream(self, stream: FakeEventStream) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)

    def _visible(self, container: Container) -> Files:
        return visible(container.files, self._volumes[container.spec.volume].files)


def _port_key(port: str) -> str:
    return port if "/" in port else f"{port}/tcp"


def _bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data
