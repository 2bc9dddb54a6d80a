"""The benchmarks. Each takes a `Context` and returns its results; vmhost and its raw-Docker baseline
are measured in the same run, interleaved round by round."""

from __future__ import annotations

import compileall
import fcntl
import itertools
import json
import os
import pty
import queue
import shutil
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from docker.models.containers import Container

import vmhost
from bench import load
from bench.environment import Bench
from bench.measure import Plan, Result, Summary, Target, paired
from vmhost.testing import DaemonProcess, all_items, free_port

API = "/api/v1"
WAIT = 120


@dataclass(frozen=True)
class Sizes:
    plan: Plan               # single operations: create, start/stop/restart, commands, events
    list_plan: Plan          # sequential list requests
    cli_plan: Plan           # `vmhost ws ls` processes
    concurrent_plan: Plan    # rounds of concurrent creates
    rows: int                # workspace rows seeded for listing
    docker_containers: int   # stopped containers made for Docker's own list
    users: int               # concurrent creators ...
    per_user: int            # ... and how many workspaces each creates
    clients: int             # concurrent list clients ...
    rate_seconds: float      # ... for this long a round
    rate_rounds: int
    connections: int         # kept-alive connections listing at once against the floor ...
    load_seconds: float      # ... for this long a round (after a second of warm-up)
    load_rounds: int
    pool_size: int           # the warm pool's size ...
    pool_creates: int        # ... and how many creates race for it at once
    swarm_plan: Plan         # the Swarm rows (a stop there takes seconds: Swarm's own)


FULL = Sizes(plan=Plan(3, 20), list_plan=Plan(20, 200), cli_plan=Plan(2, 25), concurrent_plan=Plan(0, 2),
             rows=1000, docker_containers=100, users=10, per_user=5, clients=16, rate_seconds=4, rate_rounds=3,
             connections=100, load_seconds=4, load_rounds=3, pool_size=10, pool_creates=50, swarm_plan=Plan(1, 10))
QUICK = Sizes(plan=Plan(1, 1), list_plan=Plan(2, 12), cli_plan=Plan(1, 2), concurrent_plan=Plan(0, 1),
              rows=50, docker_containers=5, users=2, per_user=2, clients=4, rate_seconds=0.5, rate_rounds=1,
             connections=10, load_seconds=0.5, load_rounds=1, pool_size=3, pool_creates=6, swarm_plan=Plan(0, 1))


@dataclass
class Context:
    bench: Bench
    daemon: DaemonProcess
    api: httpx.Client        # over the daemon's Unix socket, as root (an admin)
    sizes: Sizes
    names: Iterator[int]

    def name(self, prefix: str) -> str:
        return f"{prefix}-{next(self.names)}"


def new_context(bench: Bench, daemon: DaemonProcess, sizes: Sizes) -> Context:
    return Context(bench, daemon, daemon.client(timeout=WAIT + 30), sizes, itertools.count(1))


# -- talking to the daemon --------------------------------------------------------------------------

def answer(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url.path} answered "
                           f"{response.status_code}: {response.text[:300]}")
    return response.json()


LIST_PATH = f"{API}/workspaces?limit=1000"
"""The list the cases time: a page as large as the API gives, so that the 1,000 seeded workspaces come in
one answer, as they did before the API paged."""


def wait_succeeded(client: httpx.Client, operation: dict[str, Any]) -> dict[str, Any]:
    done = answer(client.get(f"{API}/operations/{operation['id']}/wait", params={"timeout": WAIT}))
    if done["status"] != "succeeded":
        raise RuntimeError(f"{done['type']} operation {done['id']} ended {done['status']}: {done['error']}")
    return done


def create_running(client: httpx.Client, name: str) -> dict[str, Any]:
    """Create a workspace and wait on its operation; the workspace as created (now running)."""
    accepted = answer(client.post(f"{API}/workspaces", json={"name": name, "template": "base"}))
    wait_succeeded(client, accepted["operation"])
    return accepted["workspace"]


def act(client: httpx.Client, ref: str, action: str) -> None:
    wait_succeeded(client, answer(client.post(f"{API}/workspaces/{ref}/actions/{action}")))


def delete_workspaces(client: httpx.Client, refs: list[str]) -> None:
    for operation in [answer(client.delete(f"{API}/workspaces/{ref}")) for ref in refs]:
        wait_succeeded(client, operation)


def api_paths(client: httpx.Client) -> set[str]:
    return set(answer(client.get("/openapi.json"))["paths"])


# -- lifecycle --------------------------------------------------------------------------------------

def create_to_running(ctx: Context) -> list[Result]:
    workspaces: list[str] = []
    containers: list[Container] = []
    # the baseline gets the limits vmhost gives a workspace that asks for none (quota defaults)
    probe = create_running(ctx.api, ctx.name("probe"))
    limits = {"cpus": probe["cpus"], "memory_mb": probe["memory_mb"]}
    delete_workspaces(ctx.api, [probe["id"]])

    def clean(_: int) -> None:
        delete_workspaces(ctx.api, workspaces)
        workspaces.clear()
        while containers:
            ctx.bench.sdk_remove(containers.pop())

    vmhost, sdk = paired(ctx.sizes.plan,
                         lambda _: workspaces.append(create_running(ctx.api, ctx.name("create"))["id"]),
                         lambda _: containers.append(ctx.bench.sdk_run(ctx.name("sdk-create"), **limits)),
                         between=clean)
    return [Result("create -> running (POST + wait)", "ms", vmhost, sdk, "containers.run",
                   Target(max_ratio=1.25))]


@contextmanager
def workspace_and_container(ctx: Context, prefix: str) -> Iterator[tuple[dict[str, Any], Container]]:
    workspace = create_running(ctx.api, ctx.name(prefix))
    container = ctx.bench.sdk_run(ctx.name(f"sdk-{prefix}"), cpus=workspace["cpus"], memory_mb=workspace["memory_mb"])
    try:
        yield workspace, container
    finally:
        delete_workspaces(ctx.api, [workspace["id"]])
        ctx.bench.sdk_remove(container)


def start_stop_restart(ctx: Context) -> list[Result]:
    results = []
    with workspace_and_container(ctx, "actions") as (workspace, container):
        sdk = {"stop": lambda: container.stop(timeout=10), "start": container.start,
               "restart": lambda: container.restart(timeout=10)}

        def both(action: str) -> None:  # untimed: bring both back to where the next round starts
            act(ctx.api, workspace["id"], action)
            sdk[action]()

        # each round starts running, except start's, which starts stopped
        for action, undo in (("stop", "start"), ("restart", None), ("start", "stop")):
            if action == "start":
                both("stop")
            vmhost, baseline = paired(ctx.sizes.plan, lambda _, action=action: act(ctx.api, workspace["id"], action),
                                      lambda _, action=action: sdk[action](),
                                      between=(lambda _, undo=undo: both(undo)) if undo else None)
            results.append(Result(f"{action} (POST + wait)", "ms", vmhost, baseline, f"container.{action}",
                                  Target(max_ratio=1.25)))
    return results


# -- commands ---------------------------------------------------------------------------------------

def commands(ctx: Context) -> list[Result]:
    forms = ("command echo hi (stream)", "command echo hi (operation + wait)")
    if not any(p.startswith(f"{API}/workspaces/") and p.endswith("/commands") for p in api_paths(ctx.api)):
        return [Result(form, "ms", None, note="n/a (endpoint missing)") for form in forms]
    results = []
    with workspace_and_container(ctx, "exec") as (workspace, container):
        url = f"{API}/workspaces/{workspace['id']}/commands"

        def streamed(_: int) -> None:
            response = ctx.api.post(url, json={"argv": ["echo", "hi"], "stream": True})
            if response.status_code != 200 or "hi" not in response.text:
                raise RuntimeError(f"streamed command answered {response.status_code}: {response.text[:300]}")

        def as_operation(_: int) -> None:
            wait_succeeded(ctx.api, answer(ctx.api.post(url, json={"argv": ["echo", "hi"]})))

        def with_sdk(_: int) -> None:
            if container.exec_run(["echo", "hi"]).output != b"hi\n":
                raise RuntimeError("exec_run did not print hi")

        for form, call in zip(forms, (streamed, as_operation), strict=True):
            vmhost, sdk = paired(ctx.sizes.plan, call, with_sdk)
            results.append(Result(form, "ms", vmhost, sdk, "exec_run", Target(max_ratio=1.5, max_added=15)))
    return results


# -- concurrency ------------------------------------------------------------------------------------

def concurrent_creates(ctx: Context) -> list[Result]:
    users, per_user = ctx.sizes.users, ctx.sizes.per_user
    tokens = [ctx.daemon.token(f"benchuser{number}") for number in range(users)]
    containers: list[Container] = []
    lock = threading.Lock()

    def with_vmhost(round_number: int) -> None:
        def one_user(number: int) -> None:
            with ctx.daemon.tcp(tokens[number]) as client:
                client.timeout = httpx.Timeout(WAIT + 30)
                for index in range(per_user):
                    create_running(client, f"conc{round_number}-u{number}-{index}")

        with ThreadPoolExecutor(users) as pool:
            list(pool.map(one_user, range(users)))
        running = [w for w in all_items(ctx.api, f"{API}/workspaces", status="running")
                   if w["name"].startswith(f"conc{round_number}-")]
        if len(running) != users * per_user:
            raise RuntimeError(f"{len(running)} of {users * per_user} workspaces reached running")

    def with_sdk(round_number: int) -> None:
        def one_user(number: int) -> None:
            for _ in range(per_user):
                container = ctx.bench.sdk_run(ctx.name(f"sdk-conc{round_number}"))
                with lock:
                    containers.append(container)

        with ThreadPoolExecutor(users) as pool:
            list(pool.map(one_user, range(users)))

    def clean(round_number: int) -> None:
        workspaces = all_items(ctx.api, f"{API}/workspaces")
        delete_workspaces(ctx.api, [w["id"] for w in workspaces if w["name"].startswith(f"conc{round_number}-")])
        while containers:
            ctx.bench.sdk_remove(containers.pop())

    vmhost, sdk = paired(ctx.sizes.concurrent_plan, with_vmhost, with_sdk, between=clean)
    return [Result(f"{users * per_user} creates by {users} users at once (total)", "ms", vmhost, sdk,
                   f"{users * per_user} containers.run, {users} threads", Target(max_ratio=1.5),
                   note=f"TCP, one token per user; {per_user} creates each in turn")]


# -- events -----------------------------------------------------------------------------------------

def event_delivery(ctx: Context) -> list[Result]:
    name = "event: state change -> WebSocket client"
    from websockets.exceptions import InvalidStatus, WebSocketException
    from websockets.sync.client import unix_connect

    try:
        connection = unix_connect(str(ctx.daemon.socket), "ws://vmhost/ws/events?types=workspace.status")
    except (InvalidStatus, WebSocketException, OSError) as exc:
        return [Result(name, "ms", None, note=f"n/a ({exc})")]
    frames: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()

    def receive() -> None:  # timestamps each frame the moment it is read
        try:
            for text in connection:
                frames.put((time.time(), json.loads(text)))
        except WebSocketException:
            pass

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    from_event, from_call = [], []
    try:
        workspace = create_running(ctx.api, ctx.name("events"))
        for number, action in enumerate(itertools.islice(itertools.cycle(("stop", "start")),
                                                         2 * ctx.sizes.plan.warmup + ctx.sizes.plan.reps)):
            called = time.time()
            act(ctx.api, workspace["id"], action)
            received, frame = next_status(frames, workspace["id"], "stopped" if action == "stop" else "running")
            if number >= 2 * ctx.sizes.plan.warmup:
                changed = datetime.fromisoformat(frame["time"]).astimezone(UTC).timestamp()
                from_event.append((received - changed) * 1000)
                from_call.append((received - called) * 1000)
        delete_workspaces(ctx.api, [workspace["id"]])
    finally:
        connection.close()
        receiver.join(5)
    call_median = Summary(tuple(from_call)).median
    return [Result(name, "ms", Summary(tuple(from_event)), target=Target(max_median=20),
                   note=f"from the event's own time to receipt over the socket; from the API call "
                        f"(stop/start, Docker's work included) {call_median:.0f} ms")]


def next_status(frames: queue.Queue[tuple[float, dict[str, Any]]], workspace_id: str,
                status: str) -> tuple[float, dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        received, frame = frames.get(timeout=max(0.0, deadline - time.monotonic()))
        if (frame.get("type") == "workspace.status" and frame.get("workspace_id") == workspace_id
                and frame["payload"].get("status") == status):
            return received, frame


# -- listing ----------------------------------------------------------------------------------------

def rate(make_client: Callable[[], httpx.Client], path: str, clients: int, seconds: float) -> float:
    """Requests per second that `clients` concurrent clients get through in `seconds`."""
    done = [0] * clients
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1, timeout=60)
    stop = threading.Event()

    def client_loop(number: int) -> None:
        try:
            with make_client() as client:
                client.get(path).raise_for_status()  # connected before the clock starts
                start.wait()
                while not stop.is_set():
                    client.get(path).raise_for_status()
                    done[number] += 1
        except (httpx.HTTPError, threading.BrokenBarrierError) as exc:
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    try:
        start.wait()
        began = time.perf_counter()
        time.sleep(seconds)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise RuntimeError(f"a list client failed: {errors[0]!r}") from errors[0]
    return sum(done) / (time.perf_counter() - began)


def listing(ctx: Context) -> list[Result]:
    sizes, bench = ctx.sizes, ctx.bench
    path = LIST_PATH
    listed = answer(ctx.api.get(path))["items"]
    if len(listed) < sizes.rows:
        raise RuntimeError(f"the daemon lists {len(listed)} workspaces, not the {sizes.rows} seeded")
    docker_path = f"/containers/json?all=1&filters={json.dumps({'label': [f'vmhost.bench={bench.run_id}']})}"

    def docker_client() -> httpx.Client:
        return httpx.Client(transport=httpx.HTTPTransport(uds=bench.docker_socket), base_url="http://docker",
                            timeout=60)

    with docker_client() as engine:
        containers = len(answer(engine.get(docker_path)))
        vmhost, docker_list = paired(sizes.list_plan, lambda _: ctx.api.get(path).raise_for_status(),
                                     lambda _: engine.get(docker_path).raise_for_status())
    # the answer is reused until a workspace changes: after an edit (a label) it is built afresh
    edited = listed[0]["id"]
    (rebuilt,) = paired(Plan(1, sizes.list_plan.reps // 4), lambda _: ctx.api.get(path).raise_for_status(),
                        between=lambda number: answer(ctx.api.patch(f"{API}/workspaces/{edited}",
                                                                    json={"labels": {"bench-edit": str(number)}})))
    rates = [rate(lambda: ctx.daemon.client(timeout=60), path, sizes.clients, sizes.rate_seconds)
             for _ in range(sizes.rate_rounds)]
    docker_rates = [rate(docker_client, docker_path, sizes.clients, sizes.rate_seconds)
                    for _ in range(sizes.rate_rounds)]
    reference = f"Docker GET /containers/json, {containers} containers (as measured)"
    return [
        Result(f"GET /workspaces, {len(listed)} workspaces, 1 client", "ms", vmhost, docker_list, reference,
               Target(max_median=15), note="over the Unix socket, as root (sees every workspace)"),
        Result(f"GET /workspaces, {len(listed)} workspaces, right after a workspace edit", "ms", rebuilt,
               note="the first list after a workspace changes builds the JSON afresh; the others reuse it"),
        Result(f"GET /workspaces, {len(listed)} workspaces, {sizes.clients} clients", "req/s",
               Summary(tuple(rates)), Summary(tuple(docker_rates)), reference, Target(min_median=300)),
    ]


@contextmanager
def floor(bench: Bench, body: bytes, unix: bool) -> Iterator[tuple[load.Target, int]]:
    """The bare FastAPI floor (bench/floor.py) answering `body`, on a Unix socket or a loopback port;
    where it listens, and its pid."""
    body_file = bench.dir / "floor-body.json"
    body_file.write_bytes(body)
    target = load.Target(socket=bench.dir / "floor.sock") if unix else load.Target(port=free_port())
    where = ["--uds", str(target.socket)] if unix else ["--port", str(target.port)]
    process = subprocess.Popen([sys.executable, "-m", "bench.floor", "--body", str(body_file), *where],
                               cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        transport = httpx.HTTPTransport(uds=str(target.socket)) if unix else None
        with httpx.Client(transport=transport, base_url=f"http://127.0.0.1:{target.port or 80}", timeout=5) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if client.get("/floor").status_code == 200:
                        break
                except httpx.TransportError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the floor did not start: {process.stderr.read()[-300:]!r}") from None
                    time.sleep(0.1)
        yield target, process.pid
    finally:
        process.terminate()
        process.wait(10)


def list_under_load(ctx: Context) -> list[Result]:
    """`GET /api/v1/workspaces` from many kept-alive connections at once, over TCP with an admin token and
    over the Unix socket, with a few and with many workspaces, each against the floor: a bare FastAPI
    route answering the same bytes, driven by the same client, interleaved round by round."""
    results = []
    few = ctx.bench.daemon(seed=8)
    try:
        for daemon in (few, ctx.daemon):
            results += _list_under_load(ctx, daemon)
    finally:
        few.cleanup()
    return results


def _list_under_load(ctx: Context, daemon: DaemonProcess) -> list[Result]:
    sizes, path = ctx.sizes, LIST_PATH
    token = daemon.token("bench-lister", admin=True)
    with daemon.tcp(token) as client:
        body = client.get(path).content
    count = len(json.loads(body)["items"])
    results = []
    for unix in (False, True):
        door = "Unix socket (peer credentials)" if unix else "TCP (bearer token)"
        server = load.Target(socket=daemon.socket) if unix else load.Target(port=daemon.port)
        vmhost_runs, floor_runs, cpu = [], [], {"vmhost": [0.0, 0], "floor": [0.0, 0]}

        def hammer(pid: int, kind: str, target: load.Target, url: str, bearer: str | None) -> load.Load:
            before = load.cpu_seconds(pid)
            done = load.hammer(target, url, sizes.connections, sizes.load_seconds, token=bearer)
            cpu[kind][0] += load.cpu_seconds(pid) - before
            cpu[kind][1] += done.sent
            return done

        assert daemon.process is not None
        with floor(ctx.bench, body, unix) as (bare, floor_pid):
            for _ in range(sizes.load_rounds):
                floor_runs.append(hammer(floor_pid, "floor", bare, "/floor", None))
                vmhost_runs.append(hammer(daemon.process.pid, "vmhost", server, path, None if unix else token))
        per_request = {kind: 1e6 * seconds / max(sent, 1) for kind, (seconds, sent) in cpu.items()}
        name = f"GET /workspaces, {count} workspaces, {sizes.connections} connections, {door}"
        reference = "bare FastAPI route, same body (bench/floor.py)"
        results += [
            Result(name, "req/s", Summary(tuple(r.rate for r in vmhost_runs)),
                   Summary(tuple(r.rate for r in floor_runs)), reference, Target(min_ratio=0.8),
                   note=f"server CPU a request: vmhost {per_request['vmhost']:.0f} us, "
                        f"floor {per_request['floor']:.0f} us (the same client drives both)"),
            Result(f"{name}, p99", "ms", Summary(tuple(r.p99 for r in vmhost_runs)),
                   Summary(tuple(r.p99 for r in floor_runs)), reference, Target(max_ratio=2),
                   note="p99 latency of each round's requests"),
        ]
    return results


def run_on_terminal(argv: list[str], env: dict[str, str]) -> bytes:
    """Run `argv` with its standard output on a 200-column pseudo-terminal, as a person at a shell would;
    returns everything it wrote there."""
    main, sub = pty.openpty()
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    written = bytearray()
    try:
        with subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=sub, stderr=subprocess.PIPE) as process:
            os.close(sub)
            sub = -1
            while True:
                try:
                    chunk = os.read(main, 1 << 16)
                except OSError:  # EIO: the process closed its side
                    break
                if not chunk:
                    break
                written += chunk
            stderr = process.stderr.read() if process.stderr else b""
        if process.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({process.returncode}): {stderr[-300:]!r}")
    finally:
        os.close(main)
        if sub != -1:
            os.close(sub)
    return bytes(written)


def vmhost_argv() -> list[str]:
    """The installed `vmhost` command, else the package run as a module."""
    installed = Path(sys.executable).with_name("vmhost")
    return [str(installed)] if installed.exists() else [sys.executable, "-m", "vmhost"]


def cli_listing(ctx: Context) -> list[Result]:
    """`vmhost workspaces ls` as whole processes, writing to a pipe and to a terminal (with colours),
    each against `docker ps -a` writing to the same."""
    ls = [*vmhost_argv(), "workspaces", "ls"]
    docker = shutil.which("docker")
    pipe_env = ctx.daemon.cli_env()
    terminal_env = {**{k: v for k, v in pipe_env.items() if k != "NO_COLOR"}, "TERM": "xterm-256color"}
    # compiled, as scripts/setup leaves it, also where PYTHONDONTWRITEBYTECODE is set
    compileall.compile_dir(Path(vmhost.__file__).parent, quiet=1)

    def printing(argv: list[str], lines: int, on_terminal: bool) -> Callable[[int], None]:
        """One run of `argv`, which must exit 0 having printed at least `lines` lines."""
        def action(_: int) -> None:
            if on_terminal:
                output = run_on_terminal(argv, terminal_env)
            else:
                done = subprocess.run(argv, env=pipe_env, capture_output=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-300:]!r}")
                output = done.stdout
            if output.count(b"\n") < lines:
                raise RuntimeError(f"{argv[0]} printed fewer than {lines} lines")
        return action

    def measured(where: str, on_terminal: bool, note: str) -> Result:
        name, target = f"vmhost workspaces ls, {ctx.sizes.rows} workspaces, {where}", Target(max_median=250)
        listing = printing(ls, ctx.sizes.rows, on_terminal)
        if docker is None:
            (vmhost_ls,) = paired(ctx.sizes.cli_plan, listing)
            return Result(name, "ms", vmhost_ls, target=target, note="docker CLI not installed: no reference")
        ps = [docker, "ps", "-a", "--filter", f"label=vmhost.bench={ctx.bench.run_id}"]
        vmhost_ls, docker_ps = paired(ctx.sizes.cli_plan, listing, printing(ps, ctx.sizes.docker_containers,
                                                                            on_terminal))
        return Result(name, "ms", vmhost_ls, docker_ps, f"docker ps -a, {ctx.sizes.docker_containers} containers",
                      target, note=note)

    return [measured("to a pipe", False, "whole process, wall time"),
            measured("to a terminal", True, "whole process, wall time, colours on a pseudo-terminal")]


def tab_completion(ctx: Context) -> list[Result]:
    """A Tab on a workspace name: the `vmhost` process bash's completion script runs for
    `vmhost ws show <Tab>`, which prints every name, against Python starting and doing nothing."""
    env = {**ctx.daemon.cli_env(), "_VMHOST_COMPLETE": "complete_bash", "COMP_WORDS": "vmhost ws show ",
           "COMP_CWORD": "3"}
    compileall.compile_dir(Path(vmhost.__file__).parent, quiet=1)

    def tab(_: int) -> None:
        done = subprocess.run(vmhost_argv(), env=env, capture_output=True, check=False)
        names = len(done.stdout.splitlines())
        if done.returncode != 0 or names < ctx.sizes.rows:
            raise RuntimeError(f"completion printed {names} names ({done.returncode}): {done.stderr[-300:]!r}")

    def bare_python(_: int) -> None:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    vmhost_tab, python = paired(ctx.sizes.cli_plan, tab, bare_python)
    return [Result(f"Tab on a workspace name (bash), {ctx.sizes.rows} workspaces", "ms", vmhost_tab, python,
                   "python -c pass", Target(max_median=150), note="whole process, wall time")]


def memory(daemon: DaemonProcess, what: str) -> Result:
    return Result(f"daemon RSS, {what}", "MB", Summary((daemon.rss_kib() / 1024,)), target=Target(max_median=120),
                  note="VmRSS from /proc/<pid>/status")


def settle(seconds: float = 1.0) -> None:
    """Let the daemon finish what the previous step started before the next measurement."""
    time.sleep(seconds)

