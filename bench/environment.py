"""What a benchmark run sets up and takes down again: a tiny local image, a templates directory, vmhost
daemons of its own, baseline containers made straight through the docker SDK, and seeded database rows.

Every container and volume made carries `vmhost.instance=<this run's instance>` (baseline objects also
carry `vmhost.bench=<run id>` but not `vmhost.managed`, so the daemons leave them alone); the image is
labelled `vmhost.bench=<run id>`. All of it is removed on exit.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import Mount

from vmhost.config import Settings
from vmhost.core.build import build, make_engine
from vmhost.core.engines import DEFAULT_CAPABILITIES
from vmhost.core.models import (
    Operation,
    OperationStatus,
    OperationType,
    Workspace,
    WorkspaceStatus,
    new_id,
    utcnow,
)
from vmhost.testing import DaemonProcess, build_image, remove_instance_objects

COMMAND = ["sleep", "infinity"]

# The periodic reconcile sweep inspects every workspace's container; pushed out of the run so that its
# Docker calls do not land in the samples (Docker's event stream still reconciles at once).
DAEMON_ENV = {"VMHOST_RECONCILE_INTERVAL": "3600"}


class Bench:
    """A context manager: set up on entry, every trace removed on exit (also after a failure)."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.instance = f"bench-{run_id}"
        self.labels = {"vmhost.instance": self.instance, "vmhost.bench": run_id}  # containers and volumes
        self.image = f"vmhost-bench-busybox:{run_id}"
        self.docker = docker.from_env(max_pool_size=32)  # the raw baseline's client
        self.settings = Settings.defaults(docker_host=os.environ.get("DOCKER_HOST"), instance=self.instance)
        self.engine = make_engine(self.settings)  # vmhost's, to remove what the run's daemons left
        self.dir = Path(tempfile.mkdtemp(prefix="vmhost-bench-"))
        self.templates_dir = self.dir / "templates"
        self.daemons: list[DaemonProcess] = []

    def __enter__(self) -> Self:
        try:
            self.docker.ping()
            build_image(self.docker, self.image, {"vmhost.bench": self.run_id})
            self.templates_dir.mkdir()
            (self.templates_dir / "base.toml").write_text(
                f'description = "busybox for benchmarks"\nimage = "{self.image}"\nshell = "/bin/sh"\n')
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for daemon in self.daemons:
            daemon.cleanup()
        remove_instance_objects(self.engine, self.instance)
        try:
            self.docker.images.remove(self.image, force=True)
        except docker.errors.NotFound:
            pass
        self.docker.close()
        self.engine.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- vmhost ---------------------------------------------------------------------------------

    def daemon(self, seed: int = 0, users: int = 10, env: dict[str, str] | None = None) -> DaemonProcess:
        """A started daemon of this run's instance (with `env` added to its environment); with `seed`, its
        database first gets that many workspace rows (see `seed_workspaces`)."""
        process = DaemonProcess(self.templates_dir, self.instance, {**DAEMON_ENV, **(env or {})})
        self.daemons.append(process)
        if seed:
            seed_workspaces(self.settings.replace(db_path=process.db_path, templates_dir=self.templates_dir),
                            seed, self.image, users)
        return process.start(timeout=60)

    # -- the raw Docker baseline ----------------------------------------------------------------

    def sdk_run(self, name: str, cpus: float | None = None, memory_mb: int | None = None) -> Container:
        """What vmhost makes for a workspace, straight through the SDK: a labelled volume, then
        `containers.run` with init, the volume at /workspace, labels, the same command, limits and
        hardening (vmhost.core.engines.docker's create_container)."""
        volume = f"{name}-workspace"
        labels = {**self.labels, "bench.workspace": name, "bench.owner": "root"}
        self.docker.volumes.create(name=volume, labels=labels)
        return self.docker.containers.run(
            self.image, COMMAND, name=name, hostname=name, labels=labels, init=True, detach=True,
            mounts=[Mount(target="/workspace", source=volume, type="volume")], working_dir="/workspace",
            nano_cpus=int(cpus * 1e9) if cpus else None, mem_limit=f"{memory_mb}m" if memory_mb else None,
            pids_limit=4096, security_opt=["no-new-privileges"], cap_drop=["ALL"], cap_add=list(DEFAULT_CAPABILITIES))

    def sdk_remove(self, container: Container) -> None:
        container.remove(force=True)
        self.docker.volumes.get(f"{container.name}-workspace").remove(force=True)

    def sdk_create_stopped(self, count: int) -> None:
        """`docker create` (not run) `count` labelled containers, the reference for listing."""
        for number in range(count):
            self.docker.containers.create(self.image, COMMAND, name=f"{self.instance}-list-{number}",
                                          labels={**self.labels, "bench.list": "yes"}, init=True)

    @property
    def docker_socket(self) -> str:
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return host.removeprefix("unix://")


def seed_workspaces(settings: Settings, count: int, image: str, users: int) -> None:
    """Write `count` workspace rows straight into a daemon's database (settings.db_path) through the Store
    that build() makes, before the daemon starts: real containers for a thousand workspaces would take the
    whole run to make.

    Each row is what a finished create leaves behind (its create operation succeeded, labels, env,
    a published port), owned by one of `users` users, but in status `error`: their containers do not
    exist, and the reconciler would otherwise spend the first seconds of the daemon's life marking a
    thousand running workspaces as removed outside vmhost."""
    parts = build(settings)
    store = parts.store
    try:
        for number in range(count):
            now = utcnow()
            workspace = Workspace(
                id=new_id("ws"), name=f"seeded-{number:04d}", owner=f"user{number % users:02d}", template="base",
                image=image, status=WorkspaceStatus.ERROR, status_reason="seeded for a benchmark: no container",
                created_at=now, updated_at=now, container_id=secrets.token_hex(32), cpus=1.0, memory_mb=2048,
                labels={"team": f"team{number % 7}", "seeded": "yes"}, env={"GREETING": "hi"}, command=COMMAND,
                ports={"8080/tcp": f"127.0.0.1:{20000 + number}"}, shell="/bin/sh")
            workspace.volume = f"vmhost-{workspace.id}-workspace"
            operation = Operation(id=new_id("op", 8), type=OperationType.CREATE, status=OperationStatus.PENDING,
                                  workspace_id=workspace.id, workspace_name=workspace.name, owner=workspace.owner,
                                  requested_by=workspace.owner, created_at=now)
            store.insert_workspace(workspace, operation)
            store.finish_operation(operation.id, OperationStatus.SUCCEEDED,
                                   result={"container_id": workspace.container_id})
    finally:
        parts.close()


def describe_docker(client: docker.DockerClient) -> dict[str, Any]:
    info = client.info()
    return {"server_version": info.get("ServerVersion"), "storage_driver": info.get("Driver"),
            "cpus": info.get("NCPU"), "cgroup_version": info.get("CgroupVersion")}
