"""Fault tests run against a PRIVATE Docker engine of their own: they stop and start it, and load it,
without touching the engine other test runs share. The engine, its image, containers and volumes live
under one temporary directory that is removed at the end of the session."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from conftest import core_settings

from vmhost.core.build import make_engine
from vmhost.testing import DaemonProcess, all_items, build_image, remove_instance_objects

TEST_IMAGE = "vmhost-fault-busybox:latest"
PRIVATE_BRIDGE = "vmhfault0"


class PrivateEngine:
    """A dockerd (with the containerd it manages) under its own data root, exec root and socket."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vmh-dind-", dir="/tmp"))
        self.socket = self.dir / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.log_path = self.dir / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60) -> None:
        if self.running:
            return
        # A bridge of its own: with --bridge=none, dockerd deletes the host's docker0, breaking the shared engine.
        subprocess.run(["ip", "link", "add", PRIVATE_BRIDGE, "type", "bridge"], capture_output=True, check=False)
        subprocess.run(["ip", "addr", "replace", "172.31.254.1/24", "dev", PRIVATE_BRIDGE], check=True)
        subprocess.run(["ip", "link", "set", PRIVATE_BRIDGE, "up"], check=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["dockerd", "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "exec"),
                 "--pidfile", str(self.dir / "dockerd.pid"), "-H", self.url, f"--bridge={PRIVATE_BRIDGE}",
                 "--iptables=false", "--ip6tables=false"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"private dockerd exited with {self.process.returncode}:\n{self.log()}")
            try:
                with self.client() as client:
                    client.ping()
                return
            except docker.errors.DockerException:
                time.sleep(0.2)
        raise RuntimeError(f"private dockerd did not answer within {timeout} s:\n{self.log()}")

    @contextmanager
    def frozen(self, timeout: float = 10) -> Iterator[None]:
        """dockerd and the containerd it runs, stopped (SIGSTOP) as a hung engine: it accepts connections but
        answers nothing. The whole process group stops: a child of dockerd that exits while dockerd alone is
        stopped can make the kernel send the orphaned group SIGCONT, and dockerd would answer again."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + timeout
            while _state(self.process.pid) != "T":
                assert time.monotonic() < deadline, f"dockerd did not stop (state {_state(self.process.pid)})"
                time.sleep(0.01)
            yield
        finally:
            os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self, timeout: float = 30) -> None:
        """Stop dockerd the way an admin does (SIGTERM); its containers stop with it."""
        if not self.running:
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @contextmanager
    def client(self) -> Iterator[docker.DockerClient]:
        client = docker.DockerClient(base_url=self.url, timeout=30)
        try:
            yield client
        finally:
            client.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def processes(self) -> list[int]:
        """Pids of processes still running from this engine's directory (its containerd and shims)."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(self.dir).encode() in command:
                found.append(int(entry.name))
        return found

    def destroy(self) -> None:
        if self.running:
            try:
                with self.client() as client:
                    for container in client.containers.list(all=True):
                        container.remove(force=True)
            except docker.errors.DockerException:
                pass
        self.stop()
        for pid in self.processes():  # children of our own dockerd, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            mount_point = line.split()[1]
            if mount_point.startswith(str(self.dir)):
                subprocess.run(["umount", "-l", mount_point], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        subprocess.run(["ip", "link", "delete", PRIVATE_BRIDGE], capture_output=True, check=False)


@pytest.fixture(scope="session")
def private_engine() -> Iterator[PrivateEngine]:
    engine = PrivateEngine()
    try:
        engine.start()
        with engine.client() as client:
            build_image(client, TEST_IMAGE, {"vmhost.test": "faults"})
        yield engine
    finally:
        engine.destroy()


@pytest.fixture
def engine(private_engine: PrivateEngine) -> Iterator[PrivateEngine]:
    """The private engine, running; started again after a test that stopped it."""
    private_engine.start()
    yield private_engine
    private_engine.start()


@pytest.fixture(scope="session")
def fault_templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`base` for the private engine: its busybox image, no ports (no test here needs them)."""
    directory = tmp_path_factory.mktemp("fault-templates")
    (directory / "base.toml").write_text(
        f'description = "busybox for fault tests"\nimage = "{TEST_IMAGE}"\nshell = "/bin/sh"\n')
    return directory


class FaultDaemon(DaemonProcess):
    """A daemon on the private engine; `client(timeout=...)` bounds each request, so a hang fails a test."""

    def client(self, timeout: float = 60, **kwargs: Any) -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://vmhost",
                            timeout=timeout, **kwargs)


@pytest.fixture
def fault_daemon(private_engine: PrivateEngine, fault_templates: Path) -> Iterator[Any]:
    """Start vmhost daemons on the private engine (`make(env, start=True)`); all cleaned up afterwards."""
    started: list[FaultDaemon] = []

    def make(env: dict[str, str] | None = None, start: bool = True) -> FaultDaemon:
        process = FaultDaemon(fault_templates, unique("fault"),
                              {"VMHOST_DOCKER_HOST": private_engine.url, "VMHOST_PROVISIONER_INTERVAL": "1",
                               "VMHOST_JANITOR_INTERVAL": "1", **(env or {})})
        started.append(process)
        return process.start() if start else process

    yield make
    cleaner = make_engine(core_settings(docker_host=private_engine.url))
    for process in started:
        process.cleanup()
        if private_engine.running:
            remove_instance_objects(cleaner, process.instance)
    cleaner.close()


def managed_objects(client: docker.DockerClient, instance: str) -> dict[str, dict[str, str]]:
    """Every container, volume and image of a daemon instance, as name -> the workspace id it is labelled with."""
    filters = {"label": [f"vmhost.instance={instance}"]}
    found: dict[str, dict[str, str]] = {"container": {}, "volume": {}, "image": {}}
    for container in client.containers.list(all=True, filters=filters):
        found["container"][container.name] = container.labels.get("vmhost.workspace", "")
    for volume in client.volumes.list(filters=filters):
        found["volume"][volume.name] = (volume.attrs.get("Labels") or {}).get("vmhost.workspace", "")
    for image in client.images.list(filters=filters):
        found["image"][image.id] = image.labels.get("vmhost.workspace", "")
    return found


def unique(prefix: str = "f") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def settle(client: httpx.Client, timeout: float = 90) -> list[dict[str, Any]]:
    """Wait until no operation is pending or running; returns every operation."""
    deadline = time.monotonic() + timeout
    while True:
        operations = all_items(client, "/api/v1/operations")
        busy = [o for o in operations if o["status"] in ("pending", "running")]
        if not busy or time.monotonic() > deadline:
            return operations
        time.sleep(0.2)


def check_consistent(client: httpx.Client, engine_client: docker.DockerClient, instance: str,
                     context: str) -> list[dict[str, Any]]:
    """After recovery: nothing in flight, every workspace's status is what Docker shows, failed creates
    left nothing behind, and Docker holds nothing without its database row. Returns the workspaces."""
    operations = settle(client)
    stuck = [(o["id"], o["type"], o["status"]) for o in operations if o["status"] in ("pending", "running")]
    assert not stuck, f"{context}: operations still in flight after recovery: {stuck}"
    workspaces = all_items(client, "/api/v1/workspaces")
    objects = managed_objects(engine_client, instance)
    for workspace in workspaces:
        container_name = workspace["connection"]["container_name"]
        volume = f"vmhost-{workspace['id']}-workspace"
        where = (f"{context}: workspace {workspace['name']} ({workspace['id']}) is {workspace['status']} "
                 f"({workspace['status_reason']})")
        if workspace["status"] in ("running", "stopped"):
            container = engine_client.containers.get(container_name)
            assert container.id == workspace["connection"]["container_id"], where
            assert (container.status == "running") == (workspace["status"] == "running"), \
                f"{where} but Docker says {container.status}"
            assert volume in objects["volume"], f"{where} but its volume is gone"
        else:
            assert workspace["status"] == "error", f"{where} after recovery"
            assert container_name not in objects["container"], f"{where} but its container was left behind"
            assert volume not in objects["volume"], f"{where} but its volume was left behind"
    ids = {w["id"] for w in workspaces}
    for kind, found in objects.items():
        orphans = {name: owner for name, owner in found.items() if owner not in ids}
        assert not orphans, f"{context}: {kind}s in Docker without a workspace row: {orphans}"
    return workspaces


def _state(pid: int) -> str:
    """A process's state letter from /proc (R, S, T for stopped, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
