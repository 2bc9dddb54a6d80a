"""The provider: what the orchestrator needs from a container engine, and the Docker implementation.

One provider object per engine, handed to the orchestrator. Docker's errors are mapped here, once:
an engine that does not answer is `DockerUnavailable`, an engine that refuses is `ProviderError`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Protocol

from vmhost.core.models import ContainerState
from vmhost.errors import DockerUnavailable, ProviderError

if TYPE_CHECKING:
    import docker

OutputCallback = Callable[[str, bytes], None]
"""Receives (stream name, chunk) as a command produces output: stream is "stdout" or "stderr"."""


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: list[str]
    labels: dict[str, str]
    volume: str
    env: dict[str, str] = field(default_factory=dict)
    cpus: float | None = None
    memory_mb: int | None = None
    ports: tuple[str, ...] = ()
    publish_address: str = "127.0.0.1"
    hostname: str | None = None
    pids_limit: int = 4096


@dataclass(frozen=True)
class ManagedObject:
    kind: str  # container, volume or image
    id: str
    name: str
    labels: dict[str, str]


class Provider(Protocol):
    def ping(self) -> None: ...
    def cpu_count(self) -> int: ...
    def ensure_image(self, image: str) -> None: ...
    def create_volume(self, name: str, labels: dict[str, str]) -> None: ...
    def remove_volume(self, name: str) -> None: ...
    def create_container(self, spec: ContainerSpec) -> str: ...
    def put_archive(self, container_id: str, path: str, archive: IO[bytes]) -> None: ...
    def start(self, container_id: str) -> None: ...
    def stop(self, container_id: str, timeout: int) -> None: ...
    def restart(self, container_id: str, timeout: int) -> None: ...
    def remove_container(self, container_id: str) -> None: ...
    def inspect(self, container_id: str) -> ContainerState: ...
    def exec(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
             workdir: str | None = None, on_output: OutputCallback | None = None) -> int: ...
    def remove_images(self, labels: dict[str, str]) -> None: ...
    def list_managed(self, labels: dict[str, str]) -> list[ManagedObject]: ...


class DockerProvider:
    """A provider over one Docker engine, through the docker SDK. The client connects lazily and
    reconnects after the engine comes back."""

    def __init__(self, base_url: str | None = None, timeout: int = 120) -> None:
        self.base_url = base_url or "unix:///var/run/docker.sock"
        self.timeout = timeout
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                import docker

                with self._errors("connect to Docker"):
                    self._client = docker.DockerClient(base_url=self.base_url, timeout=self.timeout,
                                                       version="auto")
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
            self.client.ping()

    def cpu_count(self) -> int:
        with self._errors("read Docker's CPU count"):
            return int(self.client.info().get("NCPU") or 1)

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

    def create_container(self, spec: ContainerSpec) -> str:
        import docker.errors
        from docker.types import Mount

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
                nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
                mem_limit=f"{spec.memory_mb}m" if spec.memory_mb else None,
                ports={_port_key(p): (spec.publish_address, None) for p in spec.ports},
                pids_limit=spec.pids_limit,
                security_opt=["no-new-privileges"],
            )
            return container.id

    def put_archive(self, container_id: str, path: str, archive: IO[bytes]) -> None:
        with self._errors(f"copy files into {path}"):
            if not self.client.api.put_archive(container_id, path, archive):
                raise ProviderError(f"Docker refused the copy into {path}")

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

    def exec(self, container_id: str, argv: list[str], env: dict[str, str] | None = None,
             workdir: str | None = None, on_output: OutputCallback | None = None) -> int:
        api = self.client.api
        with self._errors(f"run {argv[0] if argv else 'a command'}"):
            exec_id = api.exec_create(container_id, argv, environment=env or None, workdir=workdir,
                                      stdout=True, stderr=True)["Id"]
            for stdout, stderr in api.exec_start(exec_id, stream=True, demux=True):
                if on_output is not None:
                    if stdout:
                        on_output("stdout", stdout)
                    if stderr:
                        on_output("stderr", stderr)
            # only valid once the output stream has drained
            exit_code = api.exec_inspect(exec_id).get("ExitCode")
        return 127 if exit_code is None else int(exit_code)

    def remove_images(self, labels: dict[str, str]) -> None:
        import docker.errors

        with self._errors("remove images"):
            for image in self.client.images.list(filters={"label": _label_filters(labels)}):
                try:
                    self.client.images.remove(image.id, force=True)
                except docker.errors.NotFound:
                    pass

    def list_managed(self, labels: dict[str, str]) -> list[ManagedObject]:
        filters = {"label": _label_filters(labels)}
        found: list[ManagedObject] = []
        with self._errors("list vmhost's Docker objects"):
            for c in self.client.api.containers(all=True, filters=filters):
                found.append(ManagedObject("container", c["Id"], c["Names"][0].lstrip("/"), c.get("Labels") or {}))
            for v in self.client.api.volumes(filters=filters).get("Volumes") or []:
                found.append(ManagedObject("volume", v["Name"], v["Name"], v.get("Labels") or {}))
            for i in self.client.api.images(filters=filters):
                tags = i.get("RepoTags") or [i["Id"]]
                found.append(ManagedObject("image", i["Id"], tags[0], i.get("Labels") or {}))
        return found


def _port_key(port: str | int) -> str:
    text = str(port)
    return text if "/" in text else f"{text}/tcp"


def _label_filters(labels: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in labels.items()]


def _explain(exc: Any) -> str:
    return str(getattr(exc, "explanation", None) or exc)
