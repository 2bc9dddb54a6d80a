"""Fixtures: a real Docker engine, a tiny local image, and real daemon processes on a temporary
socket, a free loopback port and a temporary database. Everything a test run makes in Docker carries
its own `vmhost.instance` label and is removed at the end."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from vmhost.testing import build_image

RUN_ID = uuid.uuid4().hex[:8]
REPO = Path(__file__).resolve().parent.parent
_instances: list[str] = []
_counter = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remove_instance_objects(client: docker.DockerClient, instance: str) -> None:
    filters = {"label": [f"vmhost.instance={instance}"]}
    for container in client.containers.list(all=True, filters=filters):
        container.remove(force=True)
    for image in client.images.list(filters=filters):
        client.images.remove(image.id, force=True)
    for volume in client.volumes.list(filters=filters):
        volume.remove(force=True)


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    client.ping()
    yield client
    for instance in _instances:
        remove_instance_objects(client, instance)
    client.close()


@pytest.fixture(scope="session")
def test_image(docker_client: docker.DockerClient) -> Iterator[str]:
    tag = f"vmhost-test-busybox:{RUN_ID}"
    build_image(docker_client, tag, {"vmhost.test": RUN_ID})
    yield tag
    try:
        docker_client.images.remove(tag, force=True)
    except docker.errors.NotFound:
        pass


@pytest.fixture(scope="session")
def templates_dir(test_image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`base` replaces the built-in one, so the README's commands work in tests without a registry."""
    directory = tmp_path_factory.mktemp("templates")
    (directory / "base.toml").write_text(
        f'description = "busybox for tests"\nimage = "{test_image}"\nshell = "/bin/sh"\n')
    (directory / "web.toml").write_text(
        f'description = "with a port and provisioning"\nimage = "{test_image}"\nports = ["8080"]\n'
        'provision = ["echo provisioned > /workspace/.provisioned", "echo hello from provisioning"]\n'
        'env = {GREETING = "hi"}\n')
    (directory / "broken.toml").write_text("image = \n")
    return directory


class Daemon:
    """A `vmhost daemon` process of its own, with helpers to reach it the ways users do."""

    def __init__(self, templates_dir: Path, env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vmh-", dir="/tmp"))
        self.socket = self.dir / "s.sock"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = self.dir / "vmhost.db"
        self.instance = f"test-{RUN_ID}-{next(_counter)}"
        _instances.append(self.instance)
        self.env = {
            **os.environ,
            "VMHOST_DB_PATH": str(self.db_path),
            "VMHOST_SOCKET": str(self.socket),
            "VMHOST_BIND": f"127.0.0.1:{self.port}",
            "VMHOST_TEMPLATES_DIR": str(templates_dir),
            "VMHOST_INSTANCE": self.instance,
            "VMHOST_CONFIG": str(self.dir / "config.toml"),
            "VMHOST_PROVISIONER_INTERVAL": "1",
            "VMHOST_JANITOR_INTERVAL": "1",
            **(env or {}),
        }
        self.log_path = self.dir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> Daemon:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "vmhost", "daemon"], env=self.env, stdout=log,
                                        stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.log()}")
            try:
                with self.client() as client:
                    client.get("/health")
                return self
            except (httpx.TransportError, FileNotFoundError):
                time.sleep(0.05)
        raise RuntimeError(f"daemon did not answer within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, **kwargs: Any) -> httpx.Client:
        """HTTP over the Unix socket: the caller is this test process's user (root: an admin)."""
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://vmhost",
                            timeout=60, **kwargs)

    def tcp(self, token: str | None = None, headers: dict[str, str] | None = None) -> httpx.Client:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=all_headers, timeout=60)

    def cli(self, *args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "VMHOST_SOCKET": str(self.socket), "COLUMNS": "200", "NO_COLOR": "1",
                    **(env or {})}
        full_env.pop("VMHOST_URL", None)
        return subprocess.run([sys.executable, "-m", "vmhost", *args], env=full_env, capture_output=True,
                              text=True, timeout=timeout, input=input)

    def token(self, user: str, **body: Any) -> str:
        with self.client() as client:
            response = client.post("/api/v1/tokens", json={"user": user, **body})
            response.raise_for_status()
            return response.json()["secret"]

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def daemon(templates_dir: Path, docker_client: docker.DockerClient) -> Iterator[Daemon]:
    """One daemon shared by the tests that do not need a configuration of their own."""
    process = Daemon(templates_dir).start()
    yield process
    process.cleanup()
    remove_instance_objects(docker_client, process.instance)


@pytest.fixture
def make_daemon(templates_dir: Path, docker_client: docker.DockerClient) -> Iterator[Any]:
    """Start daemons of the test's own, with extra environment; stopped and cleaned up afterwards."""
    started: list[Daemon] = []

    def make(env: dict[str, str] | None = None, start: bool = True) -> Daemon:
        process = Daemon(templates_dir, env)
        started.append(process)
        return process.start() if start else process

    yield make
    for process in started:
        process.cleanup()
        remove_instance_objects(docker_client, process.instance)


@pytest.fixture
def api(daemon: Daemon) -> Iterator[httpx.Client]:
    with daemon.client() as client:
        yield client


@pytest.fixture
def name() -> str:
    """A workspace name no other test uses."""
    return f"t{next(_counter)}-{uuid.uuid4().hex[:6]}"


def wait_op(client: httpx.Client, operation_id: str, timeout: float = 60) -> dict[str, Any]:
    response = client.get(f"/api/v1/operations/{operation_id}/wait", params={"timeout": timeout})
    response.raise_for_status()
    operation = response.json()
    assert operation["status"] in ("succeeded", "failed"), operation
    return operation


def create_ws(client: httpx.Client, name: str, wait: bool = True, **body: Any) -> dict[str, Any]:
    """Create a workspace through the API; with `wait`, require it to reach running."""
    response = client.post("/api/v1/workspaces", json={"name": name, "template": "base", **body})
    assert response.status_code == 202, response.text
    accepted = response.json()
    if wait:
        operation = wait_op(client, accepted["operation"]["id"])
        assert operation["status"] == "succeeded", operation
        accepted["workspace"] = client.get(f"/api/v1/workspaces/{accepted['workspace']['id']}").json()
    return accepted
