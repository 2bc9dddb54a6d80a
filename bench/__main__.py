"""python -m bench [--quick] [--output PATH] [--markdown]

Daemons in turn, each on its own temporary database, socket and loopback port. The first starts
empty: idle memory, the lifecycle, commands, events and concurrent creates, each against the same
work done straight through the docker SDK, and a port's traffic through the preview and the tunnel
against a direct connection to the container. The second keeps a warm pool of 10 (bench/pool.py); the
next has its SSH server on, for `ssh web.vmhost true` against `vmhost ws exec` (bench/ssh.py). The
one after starts on a database seeded with workspace rows (1,000; 50 with --quick): the list endpoint,
`vmhost workspaces ls`, and memory with those rows. The last runs on a three-node Swarm built on this
machine (bench/swarm.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from bench import cases, ports, report
from bench.environment import Bench, describe_docker
from bench.measure import Result
from bench.pool import pool_rows
from bench.ssh import ssh_rows
from bench.swarm import swarm_rows
from vmhost.testing import remove_instance_objects

RESULTS = Path(__file__).resolve().parent / "results"


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True,
                          check=False)
    return done.stdout.strip()


def run_case(case: Callable[[cases.Context], list[Result]], ctx: cases.Context, progress: Console,
             name: str = "") -> list[Result]:
    """One benchmark; a failure becomes a result saying so, and the run goes on."""
    began = time.monotonic()
    name = name or case.__name__.replace("_", " ")
    progress.print(f"{name} ...", end=" ", highlight=False)
    try:
        results = case(ctx)
    except Exception as exc:  # noqa: BLE001  (reported in the table, the run goes on and cleans up)
        progress.print("[red]failed[/]")
        progress.print(traceback.format_exc(), markup=False, highlight=False)
        return [Result(name, "", None, note=f"error: {exc}")]
    progress.print(f"{time.monotonic() - began:.0f} s", highlight=False)
    cases.settle()
    return results


def measure(bench: Bench, sizes: cases.Sizes, progress: Console) -> list[Result]:
    daemon = bench.daemon()
    cases.settle()
    results = [cases.memory(daemon, "idle, no workspaces")]
    ctx = cases.new_context(bench, daemon, sizes)
    for case in (cases.create_to_running, cases.start_stop_restart, cases.commands, cases.event_delivery,
                 cases.concurrent_creates, ports.port_traffic):
        results += run_case(case, ctx, progress)
    ctx.api.close()
    daemon.cleanup()
    remove_instance_objects(bench.engine, bench.instance)
    results += run_case(lambda _: pool_rows(bench, sizes.plan, sizes.pool_size, sizes.pool_creates), ctx, progress,
                        "warm pool")
    remove_instance_objects(bench.engine, bench.instance)
    results += run_case(lambda _: ssh_rows(bench, sizes.plan), ctx, progress, "ssh")
    remove_instance_objects(bench.engine, bench.instance)

    progress.print(f"seeding {sizes.rows} workspace rows, creating {sizes.docker_containers} stopped containers ...",
                   highlight=False)
    bench.sdk_create_stopped(sizes.docker_containers)
    daemon = bench.daemon(seed=sizes.rows)
    ctx = cases.new_context(bench, daemon, sizes)
    for case in (cases.listing, cases.list_under_load, cases.cli_listing, cases.tab_completion):
        results += run_case(case, ctx, progress)
    results.append(cases.memory(daemon, f"{sizes.rows} workspaces, after the list runs"))
    ctx.api.close()
    daemon.cleanup()

    progress.print("building a three-node Swarm on this machine ...", highlight=False)
    results += run_case(lambda _: swarm_rows(bench, sizes.swarm_plan), ctx, progress, "swarm")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1-2 repetitions: checks that it runs")
    parser.add_argument("--output", type=Path, help="JSON results file (default: bench/results/<UTC time>.json)")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args(argv)
    sizes = cases.QUICK if args.quick else cases.FULL
    # a table this wide wraps into a mess at a pipe's default 80 columns
    console = Console(width=None if sys.stdout.isatty() else 200)
    progress = Console(stderr=True)
    started, began = datetime.now(UTC), time.monotonic()
    output = args.output or RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    run_id = uuid.uuid4().hex[:8]
    meta: dict[str, Any] = {
        "run_id": run_id, "started": started.isoformat(timespec="seconds"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(), "cpus": os.cpu_count(), "load_before": os.getloadavg(),
        "quick": args.quick, "sizes": dataclasses.asdict(sizes)}

    with Bench(run_id) as bench:
        meta["docker"] = describe_docker(bench.docker)
        results = measure(bench, sizes, progress)
    meta.update(seconds=round(time.monotonic() - began, 1), load_after=os.getloadavg())

    report.write_json(output, meta, results)
    title = (f"vmhost {meta['commit']}{' (with uncommitted changes)' if meta['uncommitted_changes'] else ''} vs "
             f"raw Docker, {meta['cpus']} CPUs, load {meta['load_before'][0]:.1f}, {meta['seconds']:.0f} s"
             f"{', --quick' if args.quick else ''}")
    report.show(console, results, title)
    if args.markdown:
        console.print(report.markdown(results), markup=False, highlight=False, soft_wrap=True)
    console.print(f"results: {output}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
