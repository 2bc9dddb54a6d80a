"""The unit tier: the core over a real SQLite file and the in-memory engine, settings and the CLI over
a mock transport. Nothing here reaches a Docker engine or starts a process, so the tier runs in seconds
on any machine (`pytest tests/unit`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from vmhost.config import Settings
from vmhost.core.engines.fake import FakeEngine
from vmhost.core.models import Caller, Operation, OperationStatus, Workspace, utcnow
from vmhost.core.orchestrator import Orchestrator, WorkspaceRequest
from vmhost.core.store import Store
from vmhost.core.templates import TemplateCatalog

IMAGE = "vmhost-unit:latest"
ALICE = Caller(user="alice")
WAIT = 10  # seconds an operation may take on the fake engine before a test fails

MakeOrchestrator = Callable[..., Orchestrator]


@pytest.fixture
def engine() -> Iterator[FakeEngine]:
    fake = FakeEngine(images=[IMAGE])
    yield fake
    fake.close()


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """`base`, and `provisioned` with one provision command; a test may add its own files."""
    directory = tmp_path / "templates"
    directory.mkdir()
    (directory / "base.toml").write_text(f'image = "{IMAGE}"\nshell = "/bin/sh"\n')
    (directory / "provisioned.toml").write_text(f'image = "{IMAGE}"\nprovision = ["echo provisioned"]\n')
    return directory


@pytest.fixture
def make_orchestrator(tmp_path: Path, engine: FakeEngine, templates: Path) -> Iterator[MakeOrchestrator]:
    """Orchestrators over one database file and one engine, like daemons started one after the other
    (or side by side); `settings` are Settings fields (e.g. quota_max_workspaces=3), `clock` the time the
    idle stop goes by."""
    made: list[Orchestrator] = []

    def make(clock: Callable[[], datetime] = utcnow, **settings: Any) -> Orchestrator:
        orchestrator = Orchestrator(Store(tmp_path / "vmhost.db"), engine, TemplateCatalog(templates),
                                    Settings.defaults(instance="unit", **settings), clock=clock)
        made.append(orchestrator)
        return orchestrator

    yield make
    engine.close()  # frees threads a test left blocked on the engine
    for orchestrator in made:
        orchestrator.close(grace=WAIT)
        orchestrator.store.close()


@pytest.fixture
def orchestrator(make_orchestrator: MakeOrchestrator) -> Orchestrator:
    """One orchestrator on the fake engine (in this directory, in place of tests/conftest.py's on Docker)."""
    return make_orchestrator()


def create_running(orchestrator: Orchestrator, name: str = "box", template: str = "base",
                   caller: Caller = ALICE) -> Workspace:
    """A workspace created through the orchestrator and running."""
    workspace, operation = orchestrator.create(caller, WorkspaceRequest(name=name, template=template))
    assert finish(orchestrator, operation, caller).status == OperationStatus.SUCCEEDED
    return orchestrator.get(caller, workspace.id)


def finish(orchestrator: Orchestrator, operation: Operation, caller: Caller = ALICE) -> Operation:
    """The operation once it has ended (the test fails if it does not within WAIT seconds)."""
    done = orchestrator.wait_operation(caller, operation.id, WAIT)
    assert done.status.finished, f"operation {done.type} still {done.status} after {WAIT} s"
    return done


def held_for(engine: FakeEngine, workspace: Workspace) -> set[str]:
    """What the engine still holds for a workspace: containers not removed, its volume, its owner's network."""
    held = {f"container {c.name} ({c.status})" for c in engine.containers({"vmhost.workspace": workspace.id})
            if c.status != "removed"}
    held |= {f"volume {v}" for v in engine.volumes() if v == workspace.volume}
    return held | {f"network {n}" for n in engine.networks() if n.endswith(f"-{workspace.owner}")}
