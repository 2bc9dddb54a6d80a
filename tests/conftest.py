"""Fixtures: a real Docker engine, a tiny local image, and real daemon processes on a temporary
socket, a free loopback port and a temporary database. Everything a test run makes in Docker carries
its own `vmhost.instance` label and is removed at the end. `on_engine` runs a test against both engines:
the one Docker engine, and a three-node Swarm built on this machine (tests/cluster.py), which is torn
down with everything on it at the end of the session."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from cluster import SwarmCluster, swarm_cluster
from docker.models.containers import Container
from docker.models.images import Image
from docker.models.volumes import Volume

from vmhost.config import Settings
from vmhost.core.build import build, make_engine
from vmhost.core.engines import Engine
from vmhost.testing import (  # all_items, free_port: imported from here by tests
    DaemonProcess,
    all_items,
    build_image,
    free_port,  # noqa: F401
    remove_instance_objects,
)

RUN_ID = uuid.uuid4().hex[:8]
REPO = Path(__file__).resolve().parent.parent
UNIT_TIER = Path(__file__).parent / "unit"
_instances: list[str] = []
_counter = itertools.count(1)


def core_settings(**changes: Any) -> Settings:
    """Settings for vmhost parts built in this process: the defaults, on the Docker engine that
    `docker_client` talks to, with `changes`."""
    return Settings.defaults(**{"docker_host": os.environ.get("DOCKER_HOST"), **changes})


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    """vmhost's engine over the tests' Docker; it removes what each test instance left at the end."""
    engine = make_engine(core_settings())
    yield engine
    for instance in _instances:
        remove_instance_objects(engine, instance)
    engine.close()


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    client.ping()
    yield client
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


class Daemon(DaemonProcess):
    """A `vmhost daemon` process of its own, labelled for this test run and removed at its end; its
    provisioner and janitor run every second so tests see their effect quickly."""

    def __init__(self, templates_dir: Path, env: dict[str, str] | None = None) -> None:
        instance = f"test-{RUN_ID}-{next(_counter)}"
        _instances.append(instance)
        super().__init__(templates_dir, instance,
                         {"VMHOST_PROVISIONER_INTERVAL": "1", "VMHOST_JANITOR_INTERVAL": "1", **(env or {})})


@pytest.fixture(scope="session")
def daemon(templates_dir: Path, docker_engine: Engine) -> Iterator[Daemon]:
    """One daemon shared by the tests that do not need a configuration of their own."""
    process = Daemon(templates_dir).start()
    yield process
    process.cleanup()
    remove_instance_objects(docker_engine, process.instance)


@pytest.fixture
def make_daemon(templates_dir: Path, docker_engine: Engine) -> Iterator[Any]:
    """Start daemons of the test's own, with extra environment; stopped and cleaned up afterwards."""
    started: list[Daemon] = []

    def make(env: dict[str, str] | None = None, start: bool = True) -> Daemon:
        process = Daemon(templates_dir, env)
        started.append(process)
        return process.start() if start else process

    yield make
    for process in started:
        process.cleanup()
        remove_instance_objects(docker_engine, process.instance)


@pytest.fixture(scope="session")
def cluster(docker_client: docker.DockerClient, test_image: str) -> Iterator[SwarmCluster]:
    """Three nodes; the test image is on the manager only (vmhost copies it to the node Swarm picks)."""
    with swarm_cluster(3, heartbeat=1) as built:
        built.load_image(test_image, docker_client, nodes=[0])
        yield built


def swarm_env(cluster: SwarmCluster) -> dict[str, str]:
    """A daemon on the cluster; workspaces reserve little by default, so that the nodes (each with this
    machine's CPUs) hold what a whole session leaves on them."""
    return {"VMHOST_ENGINE": "swarm", "VMHOST_DOCKER_HOST": cluster.manager_url,
            "VMHOST_QUOTA_DEFAULT_CPUS": "0.05", "VMHOST_QUOTA_DEFAULT_MEMORY_MB": "64"}


@pytest.fixture(scope="session")
def swarm_daemon(cluster: SwarmCluster, templates_dir: Path) -> Iterator[Daemon]:
    process = Daemon(templates_dir, swarm_env(cluster)).start()
    yield process
    process.cleanup()


@pytest.fixture(scope="session")
def swarm_engines(cluster: SwarmCluster) -> Iterator[list[docker.DockerClient]]:
    """A client of each node's own engine."""
    with ExitStack() as stack:
        yield [stack.enter_context(closing(cluster.client(node.index))) for node in cluster.nodes]


@dataclass
class OnEngine:
    """A daemon on one kind of engine, and a look behind its back at what it made there: the containers
    and volumes of a workspace, wherever they are (on Swarm: on its node, through that node's engine)."""

    kind: str  # "docker" or "swarm"
    daemon: Daemon
    engines: list[docker.DockerClient]
    make: Callable[[dict[str, str] | None], Daemon]
    env: dict[str, str] = field(default_factory=dict)

    def make_daemon(self, env: dict[str, str] | None = None) -> Daemon:
        """A daemon of the test's own on this engine (stopped and cleaned up after the test)."""
        return self.make({**self.env, **(env or {})})

    def containers(self, workspace: dict[str, Any]) -> list[Container]:
        """The workspace's containers, running ones first (a stopped one on Docker; none on Swarm)."""
        wanted = {"label": f"vmhost.workspace={workspace['id']}"}
        found = [c for engine in self.engines for c in engine.containers.list(all=True, sparse=True, filters=wanted)]
        return sorted(found, key=lambda c: c.status != "running")

    def container(self, workspace: dict[str, Any]) -> Container:
        """The workspace's running container, inspected."""
        running = [c for c in self.containers(workspace) if c.status == "running"]
        assert len(running) == 1, (workspace["name"], running)
        running[0].reload()
        return running[0]

    def running(self, workspace: dict[str, Any]) -> bool:
        return any(c.status == "running" for c in self.containers(workspace))

    def volumes(self, workspace: dict[str, Any]) -> list[Volume]:
        return [v for engine in self.engines for v in engine.volumes.list(filters={"name": volume_name(workspace)})]

    def images(self, **labels: str) -> list[Image]:
        """The images with these labels (`vmhost_snapshot="..."` for `vmhost.snapshot=...`) on any engine."""
        wanted = {"label": [f"{k.replace('_', '.')}={v}" for k, v in labels.items()]}
        return [image for engine in self.engines for image in engine.images.list(filters=wanted)]

    def sh(self, workspace: dict[str, Any], script: str) -> str:
        """What `sh -c script` prints in the workspace's container, run straight on its engine."""
        result = self.container(workspace).exec_run(["sh", "-c", script])
        assert result.exit_code == 0, result.output
        return result.output.decode()


def volume_name(workspace: dict[str, Any]) -> str:
    return f"vmhost-{workspace['id']}-workspace"


@pytest.fixture
def on_docker(daemon: Daemon, docker_client: docker.DockerClient, make_daemon: Callable[..., Daemon]) -> OnEngine:
    """The one Docker engine, for tests of what does not depend on the engine."""
    return OnEngine("docker", daemon, [docker_client], make_daemon)


@pytest.fixture(params=["docker", "swarm"])
def on_engine(request: pytest.FixtureRequest, make_daemon: Callable[..., Daemon]) -> OnEngine:
    """The test, once on the one Docker engine and once on the three-node Swarm."""
    if request.param == "docker":
        return request.getfixturevalue("on_docker")
    return OnEngine("swarm", request.getfixturevalue("swarm_daemon"), request.getfixturevalue("swarm_engines"),
                    make_daemon, swarm_env(request.getfixturevalue("cluster")))


@pytest.fixture
def engine_api(on_engine: OnEngine) -> Iterator[httpx.Client]:
    with on_engine.daemon.client() as client:
        yield client


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """This process's umask (inherited by the daemons it starts) for a while."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


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


def workspace_ids(client: httpx.Client) -> set[str]:
    """The ids of the workspaces the client sees (ids only: other tests' workspaces on a shared daemon may
    change status meanwhile)."""
    return {workspace["id"] for workspace in all_items(client, "/api/v1/workspaces")}


def create_ws(client: httpx.Client, name: str, wait: bool = True, **body: Any) -> dict[str, Any]:
    """Create a workspace through the API; with `wait`, require it to reach running."""
    response = client.post("/api/v1/workspaces", json={"name": name, "template": "base", **body})
    assert response.status_code == 202, response.text
    accepted = response.json()
    if wait:
        operation = wait_op(client, accepted["operation"]["id"])
        assert operation["status"] == "succeeded", (operation["error"], operation)
        accepted["workspace"] = client.get(f"/api/v1/workspaces/{accepted['workspace']['id']}").json()
    return accepted


def in_unit_tier(item: pytest.Item) -> bool:
    return UNIT_TIER in item.path.parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The unit tier (tests/unit: seconds, no Docker) runs first. `@pytest.mark.slow` tests run only
    with VMHOST_SLOW=1; CI runs their shorter versions."""
    items.sort(key=lambda item: not in_unit_tier(item))  # a stable sort: each tier keeps its order
    if os.environ.get("VMHOST_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set VMHOST_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """A failure in the unit tier ends the run before the Docker-backed tests (minutes) start."""
    if in_unit_tier(item) and item.session.testsfailed and (nextitem is None or not in_unit_tier(nextitem)):
        item.session.shouldfail = "the unit tier (tests/unit) failed; the Docker-backed tests did not run"


@pytest.fixture
def orchestrator(tmp_path: Path, templates_dir: Path, docker_engine: Engine) -> Iterator[Any]:
    """The core alone, no daemon: an Orchestrator built as the daemon builds it, over a temporary store
    and the real Docker engine."""
    instance = f"test-{RUN_ID}-core-{next(_counter)}"
    _instances.append(instance)
    parts = build(core_settings(db_path=tmp_path / "core.db", templates_dir=templates_dir, instance=instance))
    yield parts.orchestrator
    parts.close()
    remove_instance_objects(docker_engine, instance)
