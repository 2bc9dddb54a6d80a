"""Quotas hold under parallel creates: the check runs in the transaction that inserts the workspace."""

from __future__ import annotations

import threading

import pytest

from unit.conftest import MakeOrchestrator
from vmhost.core.models import Caller
from vmhost.core.orchestrator import WorkspaceRequest
from vmhost.errors import QuotaExceeded

BOB = Caller(user="bob")


def create_at_once(limits: dict[str, float], make_orchestrator: MakeOrchestrator,
                   requests: list[WorkspaceRequest]) -> tuple[int, list[str]]:
    """Bob sends the creates from one thread each, released together, under `limits`; returns how many
    were accepted, and the refusals."""
    orchestrator = make_orchestrator(**{f"quota_{name}": value for name, value in limits.items()})
    barrier = threading.Barrier(len(requests))
    accepted: list[str] = []
    refused: list[str] = []

    def create(request: WorkspaceRequest) -> None:
        barrier.wait()
        try:
            orchestrator.create(BOB, request)
            accepted.append(request.name)
        except QuotaExceeded as exc:
            refused.append(exc.detail)

    threads = [threading.Thread(target=create, args=(request,)) for request in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(w.name for w in orchestrator.list(BOB).items) == sorted(accepted)
    return len(accepted), refused


def test_parallel_creates_never_exceed_the_workspace_quota(make_orchestrator: MakeOrchestrator) -> None:
    accepted, refused = create_at_once({"max_workspaces": 3}, make_orchestrator,
                                       [WorkspaceRequest(name=f"ws{n}") for n in range(10)])
    assert accepted == 3
    assert refused == ["quota exceeded: bob has 3 of 3 workspaces"] * 7


@pytest.mark.parametrize("limits, request_cpus, request_memory", [
    ({"max_cpus": 2.0}, 1.0, None),
    ({"max_memory_mb": 4096}, None, 2048),
])
def test_parallel_creates_never_exceed_the_cpu_or_memory_quota(
        limits: dict[str, float], request_cpus: float | None, request_memory: int | None,
        make_orchestrator: MakeOrchestrator) -> None:
    accepted, refused = create_at_once(limits, make_orchestrator, [
        WorkspaceRequest(name=f"ws{n}", cpus=request_cpus, memory_mb=request_memory) for n in range(5)])
    assert accepted == 2
    assert len(refused) == 3 and all(r.startswith("quota exceeded: bob uses ") for r in refused), refused
