"""A real Docker Swarm of `size` nodes on this one machine, for tests: one dockerd per node (with the
containerd it manages) under /tmp/vmc-<id>/n<i>, in network and UTS namespaces of its own, the nodes joined
by a bridge in one more namespace; node 0 is the manager, the others workers, and each node carries the
label `vmhost.engine=<its own engine's unix:// URL>`. close() removes every process, mount, cgroup,
namespace and file it made, also after a start that failed half way.

Pitfalls: on the host, bridge-nf-call-iptables and Docker's FORWARD DROP would drop the traffic between the
veths (hence the bridge's own namespace); `ip netns exec` remounts /sys and dockerd fails ("Devices cgroup
isn't mounted"), so dockerd enters its namespace with `nsenter --net`; containerd, shims and containers
outlive a killed dockerd. No registry (load_image() copies images), no default route (nothing leaves the
machine), and this kernel has no IPVS: ingress (routing mesh) ports do not answer, mode=host ports do."""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import docker

log = logging.getLogger(__name__)

ENGINE_LABEL = "vmhost.engine"
SWARM_PORT = 2377


@dataclass
class Node:
    """One node: `name` is its network namespace (and hostname), `socket` its engine's unix:// URL."""

    index: int
    name: str
    address: str
    socket: str
    directory: Path
    node_id: str = ""

    @property
    def cgroup_parent(self) -> str:
        """The cgroup (in every hierarchy) under which this node's containers run."""
        return f"/{self.name}"


class SwarmCluster:
    """A swarm of `size` nodes (see the module). `heartbeat`, in seconds, is the dispatcher's heartbeat
    period (Docker's default, 5 s, when None): a killed node shows Down after about three of them."""

    def __init__(self, size: int = 3, heartbeat: float | None = None) -> None:
        if not 1 <= size <= 9:
            raise ValueError("a cluster has 1 to 9 nodes")
        self.id = secrets.token_hex(3)
        self.prefix = f"vmc{self.id}"
        self.root = Path(f"/tmp/vmc-{self.id}")
        self.lan = f"{self.prefix}-lan"
        self.heartbeat = heartbeat
        subnet = f"10.213.{random.randint(1, 254)}"
        self.nodes = [Node(i, f"{self.prefix}-n{i}", f"{subnet}.{11 + i}", f"unix://{self.root}/n{i}/docker.sock",
                           self.root / f"n{i}") for i in range(size)]
        self._processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def manager_url(self) -> str:
        return self.nodes[0].socket

    def client(self, index: int, timeout: int = 60) -> docker.DockerClient:
        """A client of node `index`'s own engine (the caller closes it)."""
        return docker.DockerClient(base_url=self.nodes[index].socket, timeout=timeout)

    # --- start -------------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        """Namespaces, engines, the swarm, the labels; returns once every node is Ready. On failure, what
        was made is removed and the error raised."""
        try:
            self._start(time.monotonic() + timeout)
        except BaseException:
            self.close()
            raise

    def _start(self, deadline: float) -> None:
        self.root.mkdir(mode=0o700)
        self._network()
        for node in self.nodes:
            self._launch(node)
        for node in self.nodes:
            self._wait_engine(node, deadline)
        manager, *workers = self.nodes
        with closing(self.client(0)) as client:
            period = None if self.heartbeat is None else int(self.heartbeat * 1e9)
            client.swarm.init(advertise_addr=manager.address, listen_addr=f"{manager.address}:{SWARM_PORT}",
                              dispatcher_heartbeat_period=period)
            client.swarm.reload()
            token = client.swarm.attrs["JoinTokens"]["Worker"]
        for node in workers:
            with closing(self.client(node.index)) as client:
                client.swarm.join(remote_addrs=[f"{manager.address}:{SWARM_PORT}"], join_token=token,
                                  listen_addr=f"{node.address}:{SWARM_PORT}", advertise_addr=node.address)
        for node in self.nodes:
            with closing(self.client(node.index)) as client:
                node.node_id = client.info()["Swarm"]["NodeID"]
        with closing(self.client(0)) as client:
            for node in self.nodes:
                swarm_node = client.nodes.get(node.node_id)
                spec = dict(swarm_node.attrs["Spec"])
                spec["Labels"] = {**spec.get("Labels", {}), ENGINE_LABEL: node.socket}
                swarm_node.update(spec)
        self.wait_states({node.index: "ready" for node in self.nodes}, deadline - time.monotonic())

    def _network(self) -> None:
        ip = _ip
        ip("netns", "add", self.lan)
        ip("-n", self.lan, "link", "set", "lo", "up")
        ip("-n", self.lan, "link", "add", "br0", "type", "bridge")
        ip("-n", self.lan, "link", "set", "br0", "up")
        for node in self.nodes:
            ip("netns", "add", node.name)
            host_end = f"vh{node.index}"
            ip("link", "add", host_end, "netns", self.lan, "type", "veth", "peer", "name", "eth0", "netns", node.name)
            ip("-n", self.lan, "link", "set", host_end, "master", "br0")
            ip("-n", self.lan, "link", "set", host_end, "up")
            ip("-n", node.name, "addr", "add", f"{node.address}/24", "dev", "eth0")
            ip("-n", node.name, "link", "set", "eth0", "up")
            ip("-n", node.name, "link", "set", "lo", "up")

    def _command(self, node: Node) -> list[str]:
        directory = node.directory
        # unshare --uts: a hostname of its own; nsenter --net (not `ip netns exec`, see the module); each
        # execs the next, so the process started is dockerd itself.
        return ["unshare", "--uts", "--", "nsenter", f"--net=/var/run/netns/{node.name}", "--",
                "sh", "-c", 'hostname "$0" && exec dockerd "$@"', node.name,
                "--config-file", str(directory / "daemon.json"),
                "--data-root", str(directory / "data"), "--exec-root", str(directory / "exec"),
                "--pidfile", str(directory / "dockerd.pid"), "-H", node.socket,
                "--containerd-namespace", node.name, "--containerd-plugins-namespace", f"{node.name}p",
                "--cgroup-parent", node.cgroup_parent, "--storage-driver", "overlay2",
                "--iptables=false", "--ip6tables=false"]

    def _launch(self, node: Node) -> None:
        node.directory.mkdir(exist_ok=True)
        (node.directory / "daemon.json").write_text("{}\n")  # not the host's /etc/docker/daemon.json
        # Workers never try a registry (they would fail anyway: the namespaces have no default route).
        env = {**os.environ, "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"}
        with open(node.directory / "dockerd.log", "ab") as output:
            self._processes[node.index] = subprocess.Popen(
                self._command(node), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True, env=env)

    def _wait_engine(self, node: Node, deadline: float) -> None:
        process = self._processes[node.index]
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{node.name}: dockerd exited with {process.returncode}:\n{self.log(node.index)}")
            try:
                with closing(self.client(node.index, timeout=5)) as client:
                    client.ping()
                return
            except docker.errors.DockerException:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.name}: dockerd did not answer:\n{self.log(node.index)}") from None
                time.sleep(0.2)

    def log(self, index: int, size: int = 4000) -> str:
        """The end of node `index`'s dockerd log."""
        path = self.nodes[index].directory / "dockerd.log"
        try:
            return path.read_text(errors="replace")[-size:]
        except OSError:
            return ""

    def wait_states(self, states: dict[int, str], timeout: float = 60) -> None:
        """Wait until the manager reports node i in states[i] ("ready", "down", ...)."""
        deadline = time.monotonic() + timeout
        with closing(self.client(0, timeout=10)) as client:
            while True:
                try:
                    seen = {n.id: n.attrs["Status"]["State"] for n in client.nodes.list()}
                except docker.errors.DockerException:
                    seen = {}
                now = {i: seen.get(self.nodes[i].node_id) for i in states}
                if now == states:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"swarm nodes are {now}, not {states} after {timeout} s")
                time.sleep(0.25)

    # --- images --------------------------------------------------------------------------------------

    def load_image(self, tag: str, source: docker.DockerClient, nodes: list[int] | None = None) -> None:
        """Copy image `tag` from the engine `source` talks to onto every node, or those of `nodes` (there is
        no registry)."""
        archive = self.root / f"image-{secrets.token_hex(4)}.tar"
        try:
            with open(archive, "wb") as handle:
                for chunk in source.images.get(tag).save(named=tag):
                    handle.write(chunk)
            for node in self.nodes:
                if nodes is not None and node.index not in nodes:
                    continue
                with closing(self.client(node.index)) as client, open(archive, "rb") as handle:
                    client.images.load(handle)
        finally:
            archive.unlink(missing_ok=True)

    # --- faults --------------------------------------------------------------------------------------

    def kill_node(self, index: int) -> None:
        """The node's machine dies and reboots: SIGKILL to its dockerd, containerd, shims and containers, then
        what a reboot clears: its mounts and its exec root (its /run). Returns once that is done; the manager
        notices after about three heartbeats (wait_states({index: "down"})); restart_node() brings it back."""
        node = self.nodes[index]
        process = self._processes.get(index)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._kill_leftovers(node)
        _unmount_under(node.directory)
        shutil.rmtree(node.directory / "exec", ignore_errors=True)
        (node.directory / "dockerd.pid").unlink(missing_ok=True)

    def restart_node(self, index: int, timeout: float = 60) -> None:
        """Start node `index`'s dockerd again (after kill_node) and wait until its engine answers; it
        rejoins the swarm by itself (wait_states({index: "ready"}) to see the manager agree)."""
        process = self._processes.get(index)
        if process is not None and process.poll() is None:
            raise RuntimeError(f"node {index} is running")
        self._launch(self.nodes[index])
        self._wait_engine(self.nodes[index], time.monotonic() + timeout)

    # --- teardown ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove everything; idempotent, and logs (never raises) what it could not remove."""
        steps: list[tuple[str, Callable[[], None]]] = [
            # Containers first: busybox's sleep, as pid 1, ignores SIGTERM, and dockerd would wait 10 s for each.
            *((f"kill {node.name}'s containers", partial(_kill_cgroup, node.cgroup_parent)) for node in self.nodes),
            ("stop the engines", self._stop_engines),
            *((f"kill {node.name}'s leftovers", partial(self._kill_leftovers, node)) for node in self.nodes),
            ("unmount", partial(_unmount_under, self.root)),
            *((f"remove {node.name}'s cgroups", partial(_remove_cgroup, node.cgroup_parent)) for node in self.nodes),
            ("delete the namespaces", self._delete_namespaces),
            ("remove the directory", self._remove_directory),
        ]
        for what, step in steps:
            try:
                step()
            except Exception:
                log.warning("cluster %s: %s failed", self.id, what, exc_info=True)

    def _stop_engines(self, timeout: float = 20) -> None:
        running = [p for p in self._processes.values() if p.poll() is None]
        for process in running:
            process.terminate()
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("cluster %s: dockerd %d ignored SIGTERM; killing it", self.id, process.pid)
                process.kill()
                process.wait()

    def _kill_leftovers(self, node: Node, timeout: float = 10) -> None:
        """SIGKILL, by pid, what still runs from the node's directory (containerd, shims), in its network
        namespace (those and docker-proxy) or in its cgroup (the containers), and remove the sockets
        the killed shims leave in containerd's shared /run/containerd/s."""
        marker = f"{node.directory}/".encode()
        namespace = _identity(f"/var/run/netns/{node.name}")
        sockets: set[Path] = set()

        def alive() -> list[int]:
            for process in self._processes.values():
                process.poll()  # reap our own children
            found = [(pid, command) for pid, command in _commands() if marker in command
                     or (namespace and _identity(f"/proc/{pid}/ns/net") == namespace)]
            sockets.update(filter(None, (_shim_socket(command) for _, command in found)))
            return [pid for pid, _ in found] + _cgroup_pids(node.cgroup_parent)

        _kill_until_gone(alive, node.name, timeout)
        for path in sockets:
            path.unlink(missing_ok=True)

    def _remove_directory(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)

    def _delete_namespaces(self) -> None:
        existing = _ip("netns", "list")
        for name in [node.name for node in self.nodes] + [self.lan]:
            if re.search(rf"^{re.escape(name)}\b", existing, re.M):
                _ip("netns", "delete", name)


@contextmanager
def swarm_cluster(size: int = 3, heartbeat: float | None = None) -> Iterator[SwarmCluster]:
    """A started SwarmCluster, closed on the way out."""
    cluster = SwarmCluster(size, heartbeat)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def _ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _commands() -> Iterator[tuple[int, bytes]]:
    """(pid, command line) of every process but this one."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                    yield int(entry.name), handle.read()
            except OSError:
                continue


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of a file, e.g. of a namespace; None if it is gone."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _shim_socket(command: bytes) -> Path | None:
    """The socket a containerd-shim-runc-v2 with this command line listens on: containerd 1.6 names it
    /run/containerd/s/<sha256 of "<containerd address>/<namespace>/<id>">, and a killed shim leaves it."""
    args = command.decode(errors="replace").split("\0")
    if not args[0].endswith("containerd-shim-runc-v2"):
        return None
    options = {key: value for key, value in zip(args, args[1:]) if key.startswith("-")}
    if not {"-address", "-namespace", "-id"} <= options.keys():
        return None
    digest = hashlib.sha256(f"{options['-address']}/{options['-namespace']}/{options['-id']}".encode()).hexdigest()
    return Path("/run/containerd/s") / digest


def _mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount, in mount order."""
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            before, _, after = line.partition(" - ")
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), before.split()[4])
            found.append((point, after.split()[0]))
    return found


def _cgroup_dirs(parent: str) -> list[Path]:
    """The directory of cgroup `parent` in every cgroup hierarchy that has it."""
    roots = {point for point, kind in _mounts() if kind in ("cgroup", "cgroup2")}
    return [path for path in (Path(root + parent) for root in sorted(roots)) if path.is_dir()]


def _cgroup_pids(parent: str) -> list[int]:
    pids: set[int] = set()
    for directory in _cgroup_dirs(parent):
        for procs in directory.rglob("cgroup.procs"):
            try:
                pids.update(int(pid) for pid in procs.read_text().split())
            except OSError:
                continue
    return sorted(pids)


def _kill_cgroup(parent: str, timeout: float = 10) -> None:
    _kill_until_gone(lambda: _cgroup_pids(parent), f"cgroup {parent}", timeout)


def _kill_until_gone(alive: Callable[[], list[int]], where: str, timeout: float) -> None:
    """SIGKILL the processes `alive()` finds until it finds none; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while pids := alive():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{where}: processes {pids} survive SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def _remove_cgroup(parent: str) -> None:
    for directory in _cgroup_dirs(parent):
        for path in sorted((p for p in directory.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            path.rmdir()
        directory.rmdir()


def _unmount_under(root: Path) -> None:
    """Unmount everything at or under `root`, deepest (and latest) first; lazily if busy."""
    prefix = f"{root}/"
    for _ in range(5):
        points = [point for point, _ in _mounts() if point == str(root) or point.startswith(prefix)]
        if not points:
            return
        for point in sorted(reversed(points), key=lambda p: -p.count("/")):
            if subprocess.run(["umount", point], capture_output=True).returncode:
                subprocess.run(["umount", "-l", point], capture_output=True)
    raise RuntimeError(f"still mounted under {root}: {points}")
