"""Fixtures: a real Docker engine, a tiny local image, and real daemon processes on a temporary
socket, a free loopback port and a temporary database. Everything a test run makes in Docker carries
its own `vmhost.instance` label and is removed at the end."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

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
