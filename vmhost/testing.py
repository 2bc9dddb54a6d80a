"""Helpers for the test suite and the benchmarks (not used by the product): a tiny local image,
since no image registry is reachable, built from Debian's busybox-static with `docker import` (through
a docker SDK client the caller hands in), the removal of a test instance's objects (through an engine),
and a real `vmhost daemon` process on a temporary database, socket and loopback port."""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx

from vmhost.errors import VmhostError

if TYPE_CHECKING:
    from vmhost.core.engines import Engine

BUSYBOX = "/bin/busybox"


def busybox_rootfs() -> bytes:
    """A tar of a minimal root: busybox with every applet linked in /bin, a passwd, /tmp, /workspace."""
    busybox = shutil.which("busybox") or BUSYBOX
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        def directory(name: str, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)

        def file(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        for name in ("bin", "etc", "root", "workspace", "usr", "usr/bin", "sbin", "proc", "sys", "dev"):
            directory(name)
        directory("tmp", 0o1777)
        with open(busybox, "rb") as handle:
            file("bin/busybox", handle.read(), 0o755)
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return buffer.getvalue()


def build_image(client: Any, tag: str, labels: dict[str, str]) -> str:
    """Import the busybox root as `tag` through a docker.DockerClient; returns the image id."""
    changes = [f'LABEL {k}="{v}"' for k, v in labels.items()] + ['CMD ["sleep", "infinity"]',
                                                                  "ENV PATH=/bin:/usr/bin:/sbin"]
    repository, _, version = tag.partition(":")
    client.api.import_image_from_data(busybox_rootfs(), repository=repository, tag=version or "latest",
                                      changes=changes)
    return client.images.get(tag).id


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def all_items(client: httpx.Client, path: str, **params: Any) -> list[Any]:
    """Every item of a collection of the API that the client may see, following its pages (of 1,000
    items unless `limit` is given)."""
    found: list[Any] = []
    cursor = None
    while True:
        response = client.get(path, params={"limit": 1000, **params, **({"cursor": cursor} if cursor else {})})
        if response.status_code != 200:
            raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:300]}")
        page = response.json()
        found += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


def remove_instance_objects(engine: Engine, instance: str) -> None:
    """Remove every container, network, image and volume labelled `vmhost.instance=<instance>`, through
    the engine."""
    labels = {"vmhost.instance": instance}
    for container in engine.list_managed(labels, kinds=("container",)):
        engine.remove_container(container.id)
    for network in engine.list_managed(labels, kinds=("network",)):
        try:
            engine.remove_network(network.id)
        except VmhostError:  # gone already, or a container still on it: the rest goes anyway
            pass
    images = engine.list_managed(labels, kinds=("image",))
    while images:  # a snapshot's image goes only after the images made from it
        left = [image for image in images if not engine.remove_image(image.id)]
        if len(left) == len(images):
            break
        images = left
    for volume in engine.list_managed(labels, kinds=("volume",)):
        engine.remove_volume(volume.name)


class DaemonProcess:
    """A `vmhost daemon` process of its own (temporary directory, database and socket, a free loopback
    port), with helpers to reach it the ways users do. `env` adds to or overrides its environment."""

    def __init__(self, templates_dir: Path, instance: str, env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vmh-", dir="/tmp"))
        self.socket = self.dir / "s.sock"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = self.dir / "vmhost.db"
        self.instance = instance
        self.env = {
            **os.environ,
            "VMHOST_DB_PATH": str(self.db_path),
            "VMHOST_SOCKET": str(self.socket),
            "VMHOST_BIND": f"127.0.0.1:{self.port}",
            "VMHOST_TEMPLATES_DIR": str(templates_dir),
            "VMHOST_INSTANCE": self.instance,
            "VMHOST_CONFIG": str(self.dir / "config.toml"),
            **(env or {}),
        }
        self.log_path = self.dir / "daemon.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.launcher: list[str] = []  # a command the daemon runs under, e.g. ["prlimit", "--nofile=512"]

    def start(self, timeout: float = 20) -> Self:
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([*self.launcher, sys.executable, "-m", "vmhost", "daemon"], env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True)
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
        """HTTP over the Unix socket: the caller is this process's user (root: an admin)."""
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://vmhost",
                            **{"timeout": 60, **kwargs})

    def tcp(self, token: str | None = None, headers: dict[str, str] | None = None) -> httpx.Client:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.url, headers=all_headers, timeout=60)

    def cli_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a `vmhost` CLI process that talks to this daemon over its socket."""
        full_env = {**os.environ, "VMHOST_SOCKET": str(self.socket), "COLUMNS": "200", "NO_COLOR": "1",
                    **(env or {})}
        full_env.pop("VMHOST_URL", None)
        return full_env

    def cli(self, *args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vmhost", *args], env=self.cli_env(env), capture_output=True,
                              text=True, timeout=timeout, input=input)

    def token(self, user: str, **body: Any) -> str:
        with self.client() as client:
            response = client.post("/api/v1/tokens", json={"user": user, **body})
            response.raise_for_status()
            return response.json()["secret"]

    def rss_kib(self) -> int:
        """The daemon's resident memory (VmRSS) in KiB."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS line in /proc status")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
