"""The warm pool's rows: create-to-running of a workspace claimed from a warm pool against a raw
`containers.run` of the same image in the same run, and 50 creates at once against a pool of 10 (3 and 6
with --quick), checked for correctness (every workspace distinct and running, each pooled one claimed
once, the pool back to its size)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from docker.models.containers import Container

from bench.cases import API, WAIT, answer, delete_workspaces, wait_succeeded
from bench.environment import Bench
from bench.measure import Plan, Result, Summary, Target, paired, timed_ms
from vmhost.testing import DaemonProcess

USERS = 10  # at most: each user has a network of their own, and Docker's default address pools hold about 30
TEMPLATE = "warm"


def pool_rows(bench: Bench, plan: Plan, size: int, creates: int) -> list[Result]:
    """Both rows, on a daemon of their own whose templates directory has a `warm` template with a pool of
    `size`; `creates` race for it in the second."""
    templates = bench.dir / "pool-templates"
    templates.mkdir(exist_ok=True)
    (templates / f"{TEMPLATE}.toml").write_text(f'image = "{bench.image}"\nshell = "/bin/sh"\npool_size = {size}\n'
                                                'provision = ["echo warm > /workspace/.warm"]\n')
    daemon = bench.daemon(env={"VMHOST_TEMPLATES_DIR": str(templates)})
    try:
        with daemon.client(timeout=WAIT + 30) as api:
            wait_full(api, size)
            return [claim_to_running(bench, api, plan, size), parallel_claims(daemon, api, size, creates)]
    finally:
        daemon.cleanup()


def pool(api: httpx.Client) -> dict[str, Any]:
    return next(p for p in answer(api.get(f"{API}/pools"))["items"] if p["template"] == TEMPLATE)


def wait_full(api: httpx.Client, size: int, timeout: float = 300) -> float:
    """Wait until the pool is back to its size; how long that took, in seconds."""
    began = time.monotonic()
    while pool(api)["ready"] != size:
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"the pool is not back to {size} after {timeout} s: {pool(api)}")
        time.sleep(0.1)
    return time.monotonic() - began


def create(api: httpx.Client, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create a workspace of the pooled template and wait for it to run: the workspace and its operation."""
    accepted = answer(api.post(f"{API}/workspaces", json={"name": name, "template": TEMPLATE}))
    return accepted["workspace"], wait_succeeded(api, accepted["operation"])


def claim_to_running(bench: Bench, api: httpx.Client, plan: Plan, size: int) -> Result:
    workspaces: list[str] = []
    containers: list[Container] = []
    probe, _ = create(api, "pool-probe")  # the baseline gets the limits the pooled workspace has
    limits = {"cpus": probe["cpus"], "memory_mb": probe["memory_mb"]}
    delete_workspaces(api, [probe["id"]])
    wait_full(api, size)
    names = iter(range(10**6))

    def with_pool(_: int) -> None:
        workspace, operation = create(api, f"pooled-{next(names)}")
        if not operation["result"].get("pooled"):
            raise RuntimeError(f"create of {workspace['name']} was not served by the pool")
        workspaces.append(workspace["id"])

    def clean(_: int) -> None:
        delete_workspaces(api, workspaces)
        workspaces.clear()
        while containers:
            bench.sdk_remove(containers.pop())
        wait_full(api, size)

    vmhost, sdk = paired(plan, with_pool,
                         lambda _: containers.append(bench.sdk_run(f"{bench.instance}-pool-sdk-{next(names)}",
                                                                   **limits)),
                         between=clean)
    return Result("create -> running from a warm pool (POST + wait)", "ms", vmhost, sdk, "containers.run",
                  Target(max_ratio=0.25), note=f"pool of {size}, template with one provision command")


def parallel_claims(daemon: DaemonProcess, api: httpx.Client, size: int, creates: int) -> Result:
    """`creates` creates at once against a full pool of `size`, by up to USERS users (each with a token, over
    TCP), timed to the last one running."""
    users = min(USERS, creates)
    tokens = [daemon.token(f"rush{number}") for number in range(users)]

    def one(number: int) -> tuple[dict[str, Any], dict[str, Any]]:
        with daemon.tcp(tokens[number % users]) as client:
            client.timeout = httpx.Timeout(WAIT + 30)
            return create(client, f"rush-{number}")

    created: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def rush() -> None:
        with ThreadPoolExecutor(creates) as threads:
            created.extend(threads.map(one, range(creates)))

    took = timed_ms(rush)
    ids = [workspace["id"] for workspace, _ in created]
    claimed = [workspace["id"] for workspace, operation in created if operation["result"].get("pooled")]
    listed = {w["id"]: w for w in answer(api.get(f"{API}/workspaces", params={"limit": 1000}))["items"]}  # admin
    problems = []
    if len(set(ids)) != creates or not all(listed.get(i, {}).get("status") == "running" for i in ids):
        problems.append(f"{len(set(ids))} distinct workspaces, not all {creates} running")
    # the refill goes on meanwhile: more than the first `size` may be claimed, each once
    if len(claimed) < min(size, creates) or len(set(claimed)) != len(claimed):
        problems.append(f"{len(claimed)} claims ({len(set(claimed))} distinct) from a pool of {size}")
    refill = wait_full(api, size)
    delete_workspaces(api, ids)
    if problems:
        raise RuntimeError("; ".join(problems))
    return Result(f"{creates} creates at once against a pool of {size} (total)", "ms", Summary((took,)),
                  note=f"{users} users; correct: {creates} distinct workspaces running, {len(claimed)} served by the "
                       f"pool (refilled meanwhile), each claimed once; the pool back to {size} {refill:.1f} s after "
                       "the last create")
