"""A Docker Swarm cluster as one `Engine` (see base.py): each workspace is a one-replica service on the
manager, and what Swarm does not do across nodes (commands, shells, files, logs, commits, volumes, images)
goes to the engine of the node its task runs on.

The handle the orchestrator keeps for a workspace's "container" is its service's id. Swarm picks the node
when the service is made; when it first stops it is pinned to that node (`node.id==...`), where its
/workspace volume stays. Stop and start scale the service to 0 and 1: the container is made again, the volume stays.
A node's own engine is named by its label `vmhost.engine` (`unix://`, `tcp://` with TLS, `ssh://`).
"""

from __future__ import annotations

import logging
import posixpath
import queue
import tarfile
import threading
import time
from collections.abc import Callable, Collection, Generator, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO, Any

import docker
import docker.errors
from docker.types import (
    DriverConfig,
    EndpointSpec,
    Mount,
    Resources,
    RestartPolicy,
    ServiceMode,
)

from vmhost.core.engines.base import (
    DEFAULT_CAPABILITIES,
    MANAGED_KINDS,
    NODE_UP,
    UNREACHABLE,
    WORKSPACE_LABEL,
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
    until_end,
)
from vmhost.core.engines.docker import DockerEngine
from vmhost.core.models import ContainerState
from vmhost.errors import ContainerNotRunning, DockerUnavailable, InvalidInput, ProviderError, VmhostError

log = logging.getLogger(__name__)

ENGINE_LABEL = "vmhost.engine"
PIN = "node.id=="  # the placement constraint that keeps a service on one node
ENGINE_SCHEMES = ("unix://", "tcp://", "ssh://")
POLL = 0.1  # seconds between looks at a service's tasks
SERVICE_LABEL = "com.docker.swarm.service.id"  # on each of a service's containers
VOLUME = "/workspace"
FILES_LABEL = "vmhost.files-of"  # on a container made for a stopped workspace's files: its service's id
PLACE_TIMEOUT = 30.0  # seconds Swarm may take to place a new service's task before the create fails
IMAGE_CHUNK = 1024 * 1024
REPORT_EVERY = 64 * 2**20  # bytes of an image copied between two lines of progress


@dataclass(frozen=True)
class Task:
    """A service's task as vmhost needs it: where it runs, its container, and how it is doing."""

    id: str
    node_id: str
    container_id: str | None
    state: str  # Swarm's task state: new, pending, assigned, ..., running, complete, failed, rejected, ...
    error: str
    desired: str

    @property
    def running(self) -> bool:
        return self.state == "running" and self.container_id is not None


class SwarmEngine:
    """A Swarm cluster through the manager at `manager_url`, and each node's own engine. `make_node_engine`
    makes a DockerEngine for a URL (with the settings' timeouts and TLS); `stop_timeout` is the grace a
    workspace's processes get when its service scales to 0."""

    def __init__(self, manager: DockerEngine, make_node_engine: Callable[[str], DockerEngine], *,
                 stop_timeout: int, log_config: dict[str, str]) -> None:
        self.manager = manager
        self.make_node_engine = make_node_engine
        self.stop_timeout = stop_timeout
        self.log_config = log_config
        self._engines: dict[str, DockerEngine] = {}  # by URL
        self._lock = threading.Lock()
        self._network_lock = threading.Lock()

    # -- the cluster ----------------------------------------------------------------------------

    def ping(self) -> None:
        self.manager.ping()

    def cpu_count(self) -> int:
        """The most CPUs one node has: a workspace runs on one node."""
        return max((n.cpus for n in self.nodes() if n.state == "ready"), default=1)

    def nodes(self) -> list[NodeInfo]:
        with self.manager.errors("list the Swarm's nodes"):
            raw_nodes = self.manager.client.api.nodes()
            tasks = self.manager.client.api.tasks(filters={"desired-state": "running"})
        reserved: dict[str, tuple[int, int]] = {}
        for task in tasks:
            node_id = task.get("NodeID")
            if not node_id:
                continue
            wants = ((task.get("Spec") or {}).get("Resources") or {}).get("Reservations") or {}
            cpus, memory = reserved.get(node_id, (0, 0))
            reserved[node_id] = (cpus + int(wants.get("NanoCPUs") or 0), memory + int(wants.get("MemoryBytes") or 0))
        found = []
        for raw in raw_nodes:
            spec, status = raw.get("Spec") or {}, raw.get("Status") or {}
            resources = (raw.get("Description") or {}).get("Resources") or {}
            state = status.get("State", "unknown")
            if state == "ready" and spec.get("Availability") in ("drain", "pause"):
                state = {"drain": "drain", "pause": "paused"}[spec["Availability"]]
            cpus_reserved, memory_reserved = reserved.get(raw["ID"], (0, 0))
            found.append(NodeInfo(
                id=raw["ID"], hostname=(raw.get("Description") or {}).get("Hostname", ""),
                address=status.get("Addr", ""), state=state,
                engine_url=(spec.get("Labels") or {}).get(ENGINE_LABEL, ""),
                cpus=int(resources.get("NanoCPUs") or 0) // 10**9,
                memory_mb=int(resources.get("MemoryBytes") or 0) // 2**20,
                cpus_reserved=cpus_reserved / 1e9, memory_mb_reserved=memory_reserved // 2**20,
                manager=bool(raw.get("ManagerStatus"))))
        return sorted(found, key=lambda n: (not n.manager, n.hostname, n.id))

    def set_node_engine(self, node_id: str, url: str) -> None:
        """Label the node with the URL of its own engine (`vmhost nodes set-engine`)."""
        if not url.startswith(ENGINE_SCHEMES):
            raise InvalidInput(f"{url!r} is not an engine URL: use unix:///path, tcp://host:port or ssh://user@host")
        self._update_node(node_id, f"label node {node_id}",
                          lambda spec: {**spec, "Labels": {**(spec.get("Labels") or {}), ENGINE_LABEL: url}})

    def node_problems(self, node_id: str, images: Collection[str]) -> list[str]:
        try:
            return self.node_engine(node_id).node_problems(node_id, images)
        except VmhostError as exc:
            return [f"its engine does not answer: {exc.detail}"]

    def set_node_availability(self, node_id: str, availability: str) -> None:
        self._update_node(node_id, f"make node {node_id} {availability}",
                          lambda spec: {**spec, "Availability": availability})

    def _update_node(self, node_id: str, doing: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        with self.manager.errors(doing):
            node = self.manager.client.nodes.get(node_id)
            node.update(change(dict(node.attrs["Spec"])))

    def node_engine(self, node_id: str) -> DockerEngine:
        """The engine of one node, from its `vmhost.engine` label (the manager's own, when it has none)."""
        with self.manager.errors(f"find node {node_id}"):
            return self._engine_of(self.manager.client.api.inspect_node(node_id))

    def _engine_of(self, node: dict[str, Any]) -> DockerEngine:
        """The engine of the node the manager shows as `node` (inspect_node's answer)."""
        node_id = node["ID"]
        url = ((node.get("Spec") or {}).get("Labels") or {}).get(ENGINE_LABEL)
        if not url:
            if node.get("ManagerStatus") and node_id == self._manager_node_id():
                return self.manager
            raise ProviderError(f"Swarm node {node_id[:12]} ({node['Description'].get('Hostname', '?')}) has no "
                                f"{ENGINE_LABEL} label: name its engine with `vmhost nodes set-engine {node_id[:12]} "
                                "URL`")
        with self._lock:
            if url not in self._engines:
                self._engines[url] = self.make_node_engine(url)
            return self._engines[url]

    def _manager_node_id(self) -> str:
        with self.manager.errors("read the manager's node id"):
            return str(self.manager.client.info()["Swarm"]["NodeID"])

    def _reachable_engines(self) -> list[DockerEngine]:
        """The engines of the nodes that are up; a node that is down is left out (logged)."""
        engines = []
        for node in self.nodes():
            if node.state not in NODE_UP:
                continue
            try:
                engine = self.node_engine(node.id)
                engine.ping()
            except VmhostError as exc:
                log.warning("Swarm node %s (%s) left out: %s", node.id[:12], node.hostname, exc.detail)
                continue
            if engine not in engines:
                engines.append(engine)
        return engines

    # -- images, volumes, networks -----------------------------------------------------------------

    def ensure_image(self, image: str, report: Callable[[str], None] | None = None) -> None:
        """Every node that is up gets the image, copied through vmhost (no registry needed) from a node
        that has it (a snapshot's image is on its workspace's node); when none has it, the manager pulls
        it."""
        engines = self._reachable_engines()
        lacking = [engine for engine in engines if not engine.image_present(image)]
        if not lacking:
            return
        source = next((e for e in engines if e not in lacking), None)
        if source is None:
            self.manager.ensure_image(image, report)
            source = self.manager
        for engine in lacking:
            if engine.base_url == source.base_url:
                continue
            began, copied = time.monotonic(), 0
            if report is not None:
                report(f"copying image {image} from {source.base_url} to {engine.base_url}")

            def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
                nonlocal copied
                for chunk in chunks:
                    copied += len(chunk)
                    if report is not None and copied // REPORT_EVERY != (copied - len(chunk)) // REPORT_EVERY:
                        report(f"  {copied // 2**20} MB")
                    yield chunk

            with source.errors(f"read image {image} from {source.base_url}"):
                saved = source.client.api.get_image(image, chunk_size=IMAGE_CHUNK)
            with engine.errors(f"copy image {image} to {engine.base_url}"):
                engine.client.api.load_image(counted(saved))
            if report is not None:
                report(f"copied {copied / 2**20:.1f} MB in {time.monotonic() - began:.1f} s")

    def image_present(self, image: str) -> bool:
        return all(engine.image_present(image) for engine in self._reachable_engines())

    def remove_image(self, image: str) -> bool:
        return all([engine.remove_image(image) for engine in self._reachable_engines()])

    def build_image(self, context: IO[bytes], *, dockerfile: str, tag: str, buildargs: dict[str, str],
                    target: str | None, labels: dict[str, str], memory_mb: int,
                    on_output: Callable[[str], None]) -> None:
        raise InvalidInput("this vmhost runs workspaces on a Swarm cluster, where it does not build images: a "
                           "devcontainer.json with a build (a Dockerfile) is refused; name an image instead")

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        """Nothing yet: the volume is made on the node Swarm picks, by the service's mount (with `labels`)."""

    def remove_volume(self, name: str) -> None:
        """Remove the volume from every node that has it, once no container (a task ending) holds it."""
        for engine in self._reachable_engines():
            deadline = time.monotonic() + self.stop_timeout + 30
            while True:
                try:
                    engine.remove_volume(name)
                    break
                except ProviderError as exc:
                    if "in use" not in exc.detail or time.monotonic() > deadline:
                        raise
                time.sleep(POLL)

    def ensure_network(self, network: NetworkSpec) -> None:
        """An attachable overlay network across the cluster, unless it exists."""
        with self.manager.errors(f"create network {network.name}"), self._network_lock:
            try:
                self.manager.client.api.inspect_network(network.name)
            except docker.errors.NotFound:
                self.manager.client.api.create_network(network.name, driver="overlay", attachable=True,
                                                       labels=network.labels)

    def remove_network(self, name: str) -> None:
        self.manager.remove_network(name)

    def move_network(self, container_id: str, leave: str, join: str) -> None:
        """A service's networks change only with a new task (a new container): no warm pool on a cluster."""
        raise ProviderError("a workspace cannot change networks on a Swarm cluster (no warm pool there)")

    # -- workspaces as services -----------------------------------------------------------------

    def create_container(self, spec: ContainerSpec) -> str:
        """Make the workspace's service (on `spec.node`, else where Swarm picks) and wait for its task to
        run. It is pinned to its node when it first stops: pinning a running service would make Swarm
        (20.10) replace its task, and with restart condition none nothing moves it meanwhile."""
        api = self.manager.client.api
        with self.manager.errors(f"create service {spec.name}"):
            try:  # a leftover of an interrupted attempt
                api.remove_service(spec.name)
            except docker.errors.NotFound:
                pass
            resources = Resources(cpu_limit=int(spec.cpus * 1e9), mem_limit=spec.memory_mb * 2**20,
                                  cpu_reservation=int(spec.cpus * 1e9), mem_reservation=spec.memory_mb * 2**20)
            resources["Limits"]["Pids"] = spec.pids_limit
            service = self.manager.client.services.create(
                spec.image, command=spec.command, name=spec.name, hostname=spec.hostname, labels=spec.labels,
                container_labels=spec.labels, env=[f"{k}={v}" for k, v in spec.env.items()], init=True,
                mounts=[Mount(target=VOLUME, source=spec.volume, type="volume", labels=spec.labels,
                              driver_config=DriverConfig("local"))],
                workdir=spec.workdir, user=spec.user, resources=resources,
                restart_policy=RestartPolicy(condition="none"),
                mode=ServiceMode("replicated", replicas=1), networks=[spec.network] if spec.network else None,
                constraints=[f"{PIN}{spec.node}"] if spec.node else None,
                endpoint_spec=EndpointSpec(mode="vip"), log_driver="json-file", log_driver_options=self.log_config,
                stop_grace_period=self.stop_timeout * 10**9, cap_drop=["ALL"],
                cap_add=list(dict.fromkeys((*DEFAULT_CAPABILITIES, *spec.capabilities))))
            service_id = str(service.id)
        doing = f"place workspace {spec.hostname or spec.name}"
        try:
            self._wait_for_task(service_id, PLACE_TIMEOUT, doing)
        except VmhostError:
            self.remove_container(service_id)
            raise
        return service_id

    def start(self, container_id: str) -> None:
        """Scale the service to 1 on its node (forcing a new task: with restart condition none, a scale
        alone makes none) and wait for it to run."""
        earlier = self._tasks(container_id, desired=None)
        running = _running_of(earlier)
        if running is not None and self._runs(running):
            return
        self._update(container_id, "start the workspace", replicas=1, force_update=True,
                     node=self._node_of(container_id, earlier))
        self._wait_for_task(container_id, self.manager.timeout, "start the workspace", {t.id for t in earlier})

    def stop(self, container_id: str, timeout: int) -> None:
        """Scale the service to 0, pinned to its node, and wait until its container is gone (Swarm stops
        it with the grace the service was made with)."""
        self._update(container_id, "stop the workspace", replicas=0,
                     node=self._node_of(container_id, self._tasks(container_id, desired=None)))
        deadline = time.monotonic() + timeout + 30
        while self._tasks(container_id, desired=None, live=True):
            if time.monotonic() > deadline:
                raise ProviderError(f"the workspace's container was still running {timeout + 30} s after "
                                    "its service scaled to 0")
            time.sleep(POLL)

    def restart(self, container_id: str, timeout: int) -> None:
        self.stop(container_id, timeout)
        self.start(container_id)

    def remove_container(self, container_id: str) -> None:
        """Remove the service, and wait until its nodes have removed its containers: until then they hold
        its image (a snapshot's, to be removed next) and its volume."""
        with self.manager.errors("remove the workspace's service"):
            try:
                service_id = self.manager.client.api.inspect_service(container_id)["ID"]
                self.manager.client.api.remove_service(service_id)
            except docker.errors.NotFound:
                return
        deadline = time.monotonic() + self.stop_timeout + 30
        for engine in self._reachable_engines():
            for left in engine.list_managed({FILES_LABEL: service_id}, kinds=("container",)):  # a crash left it
                engine.remove_container(left.id)
            while engine.list_managed({SERVICE_LABEL: service_id}, kinds=("container",)):
                if time.monotonic() > deadline:
                    raise ProviderError(f"the workspace's container was still there {self.stop_timeout + 30} s "
                                        "after its service was removed")
                time.sleep(POLL)

    def inspect(self, container_id: str) -> ContainerState:
        with self.manager.errors("inspect the workspace's service"):
            try:
                service = self.manager.client.api.inspect_service(container_id)
            except docker.errors.NotFound:
                return ContainerState(exists=False)
        tasks = self._tasks(service["ID"], desired=None)
        node = self._node_of(service, tasks)
        raw: dict[str, Any] | None = None
        if node is not None:
            with self.manager.errors(f"inspect node {node}"):
                raw = self.manager.client.api.inspect_node(node)
            state = (raw.get("Status") or {}).get("State", "unknown")
            if state != "ready":
                hostname = (raw.get("Description") or {}).get("Hostname", "?")
                return ContainerState(exists=True, status=UNREACHABLE, node=node,
                                      reason=f"its node {hostname} ({node[:12]}) is {state}")
        task = _running_of(tasks)
        if task is None or not self._runs(task, raw if task.node_id == node else None):
            return ContainerState(exists=True, running=False, status="exited", node=node)
        return ContainerState(exists=True, running=True, status="running", container_id=task.container_id,
                              node=task.node_id)

    def _runs(self, task: Task, node: dict[str, Any] | None = None) -> bool:
        """Whether the task's container runs, as its node's engine says (`node`: its node as inspect_node
        answered, when already read): the manager learns of a container stopped on its node a moment after
        the node's event, which the reconciler acts on. When the node's engine cannot say (a node coming
        back), the manager's word stands."""
        if task.container_id is None:
            return False
        try:
            engine = self._engine_of(node) if node is not None else self.node_engine(task.node_id)
            return engine.inspect(task.container_id).running
        except VmhostError as exc:
            log.info("cannot ask node %s about container %s (%s): the manager says it runs", task.node_id[:12],
                     task.container_id[:12], exc.detail)
            return True

    def _node_of(self, service: str | dict[str, Any], tasks: list[Task]) -> str | None:
        """The node the service is pinned to, else the one its newest task was placed on."""
        if isinstance(service, str):
            with self.manager.errors("inspect the workspace's service"):
                service = self.manager.client.api.inspect_service(service)
        assert isinstance(service, dict)
        placement = ((service.get("Spec") or {}).get("TaskTemplate") or {}).get("Placement") or {}
        for constraint in placement.get("Constraints") or []:
            if constraint.startswith(PIN):
                return str(constraint.removeprefix(PIN))
        return next((t.node_id for t in tasks if t.node_id), None)

    def _update(self, service_id: str, doing: str, *, replicas: int | None = None, force_update: bool = False,
                node: str | None = None) -> None:
        """Change the service; Swarm refuses an update from an outdated version, so read it again and retry."""
        for attempt in range(5):
            with self.manager.errors(doing):
                service = self.manager.client.services.get(service_id)
                changes: dict[str, Any] = {"force_update": True} if force_update else {}
                if replicas is not None:
                    changes["mode"] = ServiceMode("replicated", replicas=replicas)
                if node is not None:
                    changes["constraints"] = [f"{PIN}{node}"]
                try:
                    service.update(**changes)
                    return
                except docker.errors.APIError as exc:
                    if "update out of sequence" not in str(exc) or attempt == 4:
                        raise

    def _tasks(self, service_id: str, desired: str | None = "running", live: bool = False) -> list[Task]:
        filters: dict[str, Any] = {"service": service_id}
        if desired is not None:
            filters["desired-state"] = desired
        with self.manager.errors("list the workspace's tasks"):
            raw = self.manager.client.api.tasks(filters=filters)
        tasks = [_task(t) for t in sorted(raw, key=lambda t: t.get("CreatedAt", ""), reverse=True)]
        if live:
            return [t for t in tasks if t.state in ("assigned", "accepted", "preparing", "starting", "running")]
        return tasks

    def _current_task(self, service_id: str) -> Task | None:
        return _running_of(self._tasks(service_id))

    def _wait_for_task(self, service_id: str, timeout: float, doing: str, earlier: Collection[str] = ()) -> Task:
        """The service's task once it runs; ProviderError saying why when Swarm cannot run it (judged by
        the tasks other than those of `earlier`, which ended before)."""
        deadline = time.monotonic() + timeout
        while True:
            tasks = self._tasks(service_id)
            task = next((t for t in tasks if t.id not in earlier), None)
            if task is not None and task.running:
                return task
            failed = next((t for t in self._tasks(service_id, desired=None)
                           if t.id not in earlier and t.state in ("failed", "rejected", "orphaned")), None)
            if failed is not None and (task is None or task.state in ("failed", "rejected")):
                raise ProviderError(f"cannot {doing}: Swarm's task {failed.state}: {failed.error or 'no reason given'}")
            if time.monotonic() > deadline:
                why = f"its task is {task.state}" + (f" ({task.error})" if task and task.error else "") if task \
                    else "Swarm made no task"
                raise ProviderError(f"cannot {doing}: after {timeout:.0f} s {why}")
            time.sleep(POLL)

    def _running(self, container_id: str, doing: str) -> tuple[DockerEngine, str]:
        """The engine of the node the workspace runs on, and its task's container."""
        task = self._current_task(container_id)
        if task is None or task.container_id is None:
            raise ContainerNotRunning(f"cannot {doing}: the workspace's service has no running task")
        return self.node_engine(task.node_id), task.container_id

    # -- in the running container, through its node's engine ----------------------------------------

    # Files of a stopped workspace: its service has no container, so a container that never starts is
    # made on its node from the service's image with its volume, and removed after. Outside /workspace
    # it shows what the next start will find: the image's files.

    def put_archive(self, container_id: str, path: str, archive: IO[bytes]) -> None:
        doing = f"copy files into {path}"
        with self._files_container(container_id, doing) as (engine, container, made):
            if made:
                outside = [name for name in _archive_paths(path, archive) if not _in_volume(name)]
                if outside:
                    raise ContainerNotRunning(
                        f"cannot {doing}: the workspace is stopped, and on a Swarm cluster its container is made "
                        f"again at start: only {VOLUME} keeps what is written while it is stopped, not {outside[0]}")
            engine.put_archive(container, path, archive)

    def get_archive(self, container_id: str, path: str) -> tuple[Generator[bytes, None, None], PathStat]:
        held = ExitStack()  # the container for a stopped workspace's files lives until the stream ends
        engine, container, _ = held.enter_context(self._files_container(container_id, f"copy {path} out of the "
                                                                                       "workspace"))
        try:
            chunks, stat = engine.get_archive(container, path)
        except BaseException:
            held.close()
            raise

        def then_remove() -> Generator[bytes, None, None]:
            with held:
                yield from chunks
        return then_remove(), stat

    def stat_path(self, container_id: str, path: str) -> PathStat | None:
        with self._files_container(container_id, f"look at {path} in the workspace") as (engine, container, _):
            return engine.stat_path(container, path)

    @contextmanager
    def _files_container(self, service_id: str, doing: str) -> Iterator[tuple[DockerEngine, str, bool]]:
        """The node's engine and the running task's container, else a container made (not started) there
        for the files of the stopped workspace (then True)."""
        tasks = self._tasks(service_id, desired=None)
        task = _running_of(tasks)
        if task is not None and task.container_id is not None:
            yield self.node_engine(task.node_id), task.container_id, False
            return
        with self.manager.errors("inspect the workspace's service"):
            service = self.manager.client.api.inspect_service(service_id)
        node = self._node_of(service, tasks)
        if node is None:
            raise ContainerNotRunning(f"cannot {doing}: the workspace's service has never run")
        spec = service["Spec"]["TaskTemplate"]["ContainerSpec"]
        volume = next(m["Source"] for m in spec.get("Mounts") or [] if m["Target"] == VOLUME)
        engine = self.node_engine(node)
        api = engine.client.api
        labels = {k: v for k, v in (spec.get("Labels") or {}).items() if k != WORKSPACE_LABEL}
        with engine.errors(f"{doing} (a container for the stopped workspace's files)"):
            made = api.create_container(spec["Image"].split("@")[0], command=["true"],
                                        labels={**labels, FILES_LABEL: service_id},
                                        host_config=api.create_host_config(binds={volume: {"bind": VOLUME,
                                                                                           "mode": "rw"}}))
        try:
            yield engine, made["Id"], True
        finally:
            engine.remove_container(made["Id"])

    def commit(self, container_id: str, repository: str, tag: str, labels: dict[str, str]) -> CommittedImage:
        engine, container = self._running(container_id, "commit the workspace's filesystem")
        return engine.commit(container, repository, tag, labels)

    def run_command(self, container_id: str, argv: list[str], *, on_output: OutputCallback,
                    env: dict[str, str] | None = None, workdir: str | None = None, stdin: bytes | None = None,
                    timeout: float | None = None, cancel: threading.Event | None = None) -> CommandOutcome:
        engine, container = self._running(container_id, f"run {argv[0]}")
        return engine.run_command(container, argv, on_output=on_output, env=env, workdir=workdir, stdin=stdin,
                                  timeout=timeout, cancel=cancel)

    def open_terminal(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
                      workdir: str | None = None) -> Terminal:
        engine, container = self._running(container_id, "open a terminal")
        return engine.open_terminal(container, argv, env=env, workdir=workdir)

    def open_process(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
                     workdir: str | None = None) -> Process:
        engine, container = self._running(container_id, f"run {argv[0] if argv else 'a command'}")
        return engine.open_process(container, argv, env=env, workdir=workdir)

    def logs(self, container_id: str, follow: bool = False, tail: int | None = None) -> LogStream:
        engine, container = self._running(container_id, "read the workspace's output")
        return engine.logs(container, follow=follow, tail=tail)

    def container_address(self, container_id: str, network: str | None) -> str | None:
        """None: this host does not reach a node's overlay network; ports are reached through the node."""
        return None

    # -- what vmhost made, and what happens to it -------------------------------------------------

    def list_managed(self, labels: dict[str, str], kinds: Collection[str] = MANAGED_KINDS) -> list[ManagedObject]:
        """Services (as kind "container") and networks from the manager; volumes and images from every node
        that is up."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        found: list[ManagedObject] = []
        if "container" in kinds:
            with self.manager.errors("list vmhost's services"):
                for s in self.manager.client.api.services(filters=filters):
                    found.append(ManagedObject("container", s["ID"], s["Spec"]["Name"], s["Spec"].get("Labels") or {}))
        if "network" in kinds:
            found += self.manager.list_managed(labels, kinds=("network",))
        per_node = [k for k in kinds if k in ("volume", "image")]
        if per_node:
            seen = set()
            for engine in self._reachable_engines():
                for managed in engine.list_managed(labels, kinds=per_node):
                    if (managed.kind, managed.id) not in seen:
                        seen.add((managed.kind, managed.id))
                        found.append(managed)
        return found

    def data_root(self) -> str | None:
        return None  # on the nodes' disks

    def container_events(self, labels: dict[str, str]) -> EventStream:
        """Container events from every node that is up (each node's engine sees its own containers)."""
        return MergedEvents([engine.container_events(labels) for engine in self._reachable_engines()])

    def close(self) -> None:
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in [self.manager, *engines]:
            engine.close()


class MergedEvents:
    """Several engines' event streams as one; it ends when any of them ends (a node went away), so that
    the follower starts again over the nodes that are up."""

    def __init__(self, streams: list[EventStream]) -> None:
        self._streams = streams
        self._queue: queue.Queue[ContainerEvent | BaseException | None] = queue.Queue(maxsize=1000)
        for stream in streams:
            threading.Thread(target=self._pump, args=(stream,), name="vmhost-swarm-events", daemon=True).start()

    def _pump(self, stream: EventStream) -> None:
        try:
            for event in stream:
                self._queue.put(event)
        except BaseException as exc:  # handed to the reader, raised there
            self._queue.put(exc)
            return
        self._queue.put(None)

    def __iter__(self) -> Iterator[ContainerEvent]:
        if not self._streams:
            raise DockerUnavailable("no Swarm node answers")
        return until_end(self._queue.get)

    def close(self) -> None:
        for stream in self._streams:
            stream.close()
        self._queue.put(None)


def _archive_paths(path: str, archive: IO[bytes]) -> list[str]:
    """The absolute paths a tar archive extracted at `path` writes (the archive is read, then rewound)."""
    start = archive.tell()
    with tarfile.open(fileobj=archive, mode="r|") as tar:
        names = [posixpath.normpath(posixpath.join(path, member.name)) for member in tar]
    archive.seek(start)
    return names


def _in_volume(path: str) -> bool:
    return path == VOLUME or path.startswith(VOLUME + "/")


def _running_of(tasks: list[Task]) -> Task | None:
    """The task that runs and is meant to (not one Swarm is replacing or shutting down)."""
    return next((t for t in tasks if t.desired == "running" and t.running), None)


def _task(raw: dict[str, Any]) -> Task:
    status = raw.get("Status") or {}
    return Task(id=raw["ID"], node_id=raw.get("NodeID") or "",
                container_id=(status.get("ContainerStatus") or {}).get("ContainerID"),
                state=status.get("State", "unknown"), error=status.get("Err") or "",
                desired=raw.get("DesiredState", ""))
