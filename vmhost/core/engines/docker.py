"""The Docker engine: `Engine` (see base.py) over one Docker engine, through the docker SDK's public API.

Its connection and the mapping of Docker's errors are in docker_connection.py, its commands and
terminals in docker_exec.py, its log and event streams in docker_streams.py. Only modules under
vmhost/core/engines/ import the docker SDK.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Generator
from typing import IO, Any
from urllib.parse import quote

import docker
import docker.errors
import docker.utils
import requests
import requests.exceptions
from docker.types import LogConfig, Mount

from vmhost.core.engines.base import (
    DEFAULT_CAPABILITIES,
    LOCAL_NODE,
    MANAGED_KINDS,
    ONE_HOST_HAS_NO_NODES,
    WATCHED_ACTIONS,
    CommittedImage,
    ContainerSpec,
    EventStream,
    ManagedObject,
    NetworkSpec,
    NodeInfo,
    PathStat,
)
from vmhost.core.engines.docker_connection import TLSFiles
from vmhost.core.engines.docker_exec import DockerExec
from vmhost.core.engines.docker_streams import DockerEventStream, DockerLogStream
from vmhost.core.models import ContainerState
from vmhost.errors import ContainerNotRunning, InvalidInput, ProviderError

ARCHIVE_CHUNK = 1024 * 1024


class DockerEngine(DockerExec):
    """An engine over one Docker engine, through the docker SDK (its connection: DockerConnection; its
    commands: DockerExec). `timeout` bounds each API call (seconds); containers log to json-file, rotated
    at `log_max_mb` MB, keeping `log_max_files` files."""

    def __init__(self, base_url: str | None, *, timeout: int, log_max_mb: int, log_max_files: int,
                 tls: TLSFiles | None = None) -> None:
        super().__init__(base_url, timeout=timeout, tls=tls)
        self.log_config = {"max-size": f"{log_max_mb}m", "max-file": str(log_max_files)}
        # Docker lets two networks share a name (it ignores CheckDuplicate since API 1.44): parallel creates
        # of one owner's workspaces must not both make theirs
        self._network_lock = threading.Lock()

    def ensure_image(self, image: str, report: Callable[[str], None] | None = None) -> None:
        with self.errors(f"find image {image}"):
            try:
                self.client.images.get(image)
                return
            except docker.errors.ImageNotFound:
                pass
        if report is not None:
            report(f"pulling image {image}")
        try:
            with self.errors(f"pull image {image}"):
                self.client.images.pull(image)
        except ProviderError as exc:
            raise ProviderError(f"image {image} is not on this host and could not be pulled: {exc.detail}") \
                from exc

    def build_image(self, context: IO[bytes], *, dockerfile: str, tag: str, buildargs: dict[str, str],
                    target: str | None, labels: dict[str, str], memory_mb: int,
                    on_output: Callable[[str], None]) -> None:
        with self.errors(f"build image {tag}"):
            stream = self.client.api.build(fileobj=context, custom_context=True, dockerfile=dockerfile, tag=tag,
                                           buildargs=buildargs, target=target, labels=labels, rm=True,
                                           forcerm=True, decode=True,
                                           container_limits={"memory": memory_mb * 2**20,
                                                             "memswap": memory_mb * 2**20})
            for chunk in stream:
                if chunk.get("stream"):
                    on_output(chunk["stream"].rstrip("\n"))
                if chunk.get("error"):
                    raise ProviderError(f"the build of {tag} failed: {str(chunk['error']).strip()}")

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        with self.errors(f"create volume {name}"):
            self.client.volumes.create(name=name, labels=labels)

    def remove_volume(self, name: str) -> None:
        with self.errors(f"remove volume {name}"):
            try:
                self.client.volumes.get(name).remove(force=True)
            except docker.errors.NotFound:
                pass

    def remove_network(self, name: str) -> None:
        """Remove a network; one missing, or still joined by a running container, is left alone."""
        with self.errors(f"remove network {name}"):
            try:
                self.client.api.remove_network(name)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if exc.status_code != 403:  # 403: it has active endpoints
                    raise

    def move_network(self, container_id: str, leave: str, join: str) -> None:
        with self.errors(f"move container {container_id[:12]} to network {join}"):
            joined = self.client.api.inspect_container(container_id)["NetworkSettings"]["Networks"] or {}
            if join not in joined:
                self.client.api.connect_container_to_network(container_id, join)
            if leave in joined:
                self.client.api.disconnect_container_from_network(container_id, leave)

    def ensure_network(self, network: NetworkSpec) -> None:
        """Make the bridge network unless it exists."""
        with self.errors(f"create network {network.name}"), self._network_lock:
            try:
                self.client.api.inspect_network(network.name)
            except docker.errors.NotFound:
                try:
                    self.client.api.create_network(
                        network.name, driver="bridge", labels=network.labels, check_duplicate=True,
                        options={"com.docker.network.bridge.enable_icc": "false"} if network.isolated else None)
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:  # made meanwhile by a parallel create
                        raise

    def create_container(self, spec: ContainerSpec) -> str:
        with self.errors(f"create container {spec.name}"):
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
                working_dir=spec.workdir,
                user=spec.user or "",
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
        with self.errors(f"copy files into {path}"):
            if not self.client.api.put_archive(container_id, path, archive):
                raise ProviderError(f"Docker refused the copy into {path}")

    def get_archive(self, container_id: str, path: str) -> tuple[Generator[bytes, None, None], PathStat]:
        """A tar of `path` (a file, a directory or a link, not followed), streamed, with its stat. Close the
        stream when not reading it to its end: until its connection closes, Docker holds the container."""
        with self.errors(f"copy {path} out of the container"):
            stream, stat = self.client.api.get_archive(container_id, path, chunk_size=ARCHIVE_CHUNK)

        def chunks() -> Generator[bytes, None, None]:
            try:
                with self.errors(f"copy {path} out of the container"):
                    yield from stream
            finally:
                stream.close()  # closes the connection, also when the stream was never read

        return chunks(), _path_stat(stat or {})

    def stat_path(self, container_id: str, path: str) -> PathStat | None:
        """The stat of `path` in the container, or None when nothing is there."""
        api = self.client.api
        with self.errors(f"look at {path} in the container"):
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
        with self.errors("commit the container's filesystem"):
            base = api.inspect_container(container_id)["Image"]
            image_id = api.commit(container_id, repository=repository, tag=tag,
                                  changes=[f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()])["Id"]
            added = api.inspect_image(image_id)["Size"] - api.inspect_image(base)["Size"]
        return CommittedImage(id=image_id, added_bytes=max(added, 0))

    def remove_image(self, image: str) -> bool:
        """Remove one image unless a container still uses it (then False: left for a later sweep)."""
        with self.errors(f"remove image {image}"):
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
        with self.errors("start the container"):
            self.client.api.start(container_id)

    def stop(self, container_id: str, timeout: int) -> None:
        with self.errors("stop the container"):
            self.client.api.stop(container_id, timeout=timeout)

    def restart(self, container_id: str, timeout: int) -> None:
        with self.errors("restart the container"):
            self.client.api.restart(container_id, timeout=timeout)

    def remove_container(self, container_id: str) -> None:
        with self.errors("remove the container"):
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
        with self.errors("inspect the container"):
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
                              ports=ports, container_id=info.get("Id"), node=LOCAL_NODE)

    def nodes(self) -> list[NodeInfo]:
        """This engine's host, as the one node."""
        with self.errors("read Docker's host"):
            info = self.client.info()
        return [NodeInfo(id=LOCAL_NODE, hostname=info.get("Name", ""), address=self.base_url, state="ready",
                         engine_url=self.base_url, cpus=int(info.get("NCPU") or 0),
                         memory_mb=int(info.get("MemTotal") or 0) // 2**20, manager=True)]

    def set_node_engine(self, node_id: str, url: str) -> None:
        raise InvalidInput(ONE_HOST_HAS_NO_NODES)

    def node_problems(self, node_id: str, images: Collection[str]) -> list[str]:
        self.ping()
        return [f"image {image} is not there" for image in images if not self.image_present(image)]

    def set_node_availability(self, node_id: str, availability: str) -> None:
        raise InvalidInput(ONE_HOST_HAS_NO_NODES)

    def container_address(self, container_id: str, network: str | None) -> str:
        with self.errors("find the container's address"):
            info = self.client.api.inspect_container(container_id)
        if not (info.get("State") or {}).get("Running"):
            raise ContainerNotRunning(f"cannot find the address of container {container_id[:12]}: it is not running")
        networks = (info.get("NetworkSettings") or {}).get("Networks") or {}
        attached = [networks[network]] if network in networks else list(networks.values())
        for endpoint in attached:
            if endpoint.get("IPAddress"):
                return endpoint["IPAddress"]
        raise ProviderError(f"container {container_id[:12]} has no address on a network")

    def logs(self, container_id: str, follow: bool = False, tail: int | None = None) -> DockerLogStream:
        with self.errors("read the container's output"):
            stream = self.client.api.logs(container_id, stream=True, follow=follow, stdout=True, stderr=True,
                                          tail="all" if tail is None else tail)
        return DockerLogStream(self, stream)

    def list_managed(self, labels: dict[str, str], kinds: Collection[str] = MANAGED_KINDS) -> list[ManagedObject]:
        filters = {"label": _label_filters(labels)}
        found: list[ManagedObject] = []
        with self.errors("list vmhost's Docker objects"):
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
        with self.errors(f"find image {image}"):
            try:
                self.client.api.inspect_image(image)
                return True
            except docker.errors.ImageNotFound:
                return False

    def data_root(self) -> str | None:
        """Where the engine keeps images and volumes, when the engine runs on this host."""
        if not self.base_url.startswith("unix://"):
            return None
        with self.errors("read Docker's data directory"):
            return self.client.info().get("DockerRootDir")

    def container_events(self, labels: dict[str, str]) -> EventStream:
        with self.errors("follow Docker's events"):
            stream = self.client.api.events(decode=True, filters={
                "type": ["container"], "label": _label_filters(labels), "event": list(WATCHED_ACTIONS)})
        return DockerEventStream(self, stream)


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
