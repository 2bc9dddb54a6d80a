"""SIGTERM while clients are busy: requests in flight finish or fail cleanly, the daemon exits within
a bounded time, and the next start resumes the operations that were still queued."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from conftest import wait_op

from faults.conftest import PrivateEngine, check_consistent, settle, unique

CLIENTS = 20
# uvicorn's graceful shutdown allows 20 s; past this bound the shutdown hangs
EXIT_BOUND = 45


def test_sigterm_under_load_requests_end_cleanly_exit_is_bounded_and_restart_resumes_queued_operations(
        fault_daemon: Any, engine: PrivateEngine) -> None:
    daemon = fault_daemon({"VMHOST_WORKERS": "1"})
    with daemon.client() as client:
        long_running = client.post("/api/v1/workspaces", json={"name": unique("term"), "template": "base",
                                                               "provision": ["sleep 60"]}).json()
        queued = [client.post("/api/v1/workspaces", json={"name": unique("term"), "template": "base"}).json()
                  for _ in range(4)]
        deadline = time.monotonic() + 30
        while "$ sleep 60" not in client.get(f"/api/v1/operations/{long_running['operation']['id']}").json()["output"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)

    statuses: Counter[str] = Counter()
    server_errors: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client_loop(number: int) -> None:
        make = daemon.client if number % 2 else (lambda: httpx.Client(base_url=daemon.url, timeout=60,
                                                                      headers={"Authorization": f"Bearer {token}"}))
        while not stop.is_set():
            try:
                with make() as client:
                    response = client.get("/api/v1/workspaces") if number % 3 else client.post(
                        "/api/v1/tokens", json={"user": f"term{number}"})
                outcome = str(response.status_code)
                if response.status_code >= 500:
                    with lock:
                        server_errors.append(f"{response.status_code} {response.text[:200]}")
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, FileNotFoundError) as exc:
                outcome = type(exc).__name__  # refused or closed by a daemon going away: a clean failure
                time.sleep(0.05)
            with lock:
                statuses[outcome] += 1

    token = daemon.token("root", admin=True)
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(client_loop, n) for n in range(CLIENTS)]
        try:
            time.sleep(2)
            assert daemon.process is not None
            sent = time.monotonic()
            daemon.process.send_signal(signal.SIGTERM)
            try:
                daemon.process.wait(EXIT_BOUND)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"daemon still running {EXIT_BOUND} s after SIGTERM:\n{daemon.log()[-3000:]}")
            took = time.monotonic() - sent
            time.sleep(0.5)
        finally:
            stop.set()
        for future in futures:
            future.result()  # a hang here would be a client left waiting forever: httpx's timeout bounds it
    print(f"SIGTERM: daemon exited after {took:.1f} s; client outcomes {dict(statuses)}")
    assert not server_errors, server_errors[:10]
    assert sum(n for outcome, n in statuses.items() if outcome.isdigit()) > 0

    daemon.env["VMHOST_WORKERS"] = "4"
    daemon.start()
    with daemon.client() as client:
        for accepted in queued:
            assert wait_op(client, accepted["operation"]["id"], timeout=120)["status"] == "succeeded"
        interrupted = client.get(f"/api/v1/operations/{long_running['operation']['id']}").json()
        assert interrupted["status"] in ("pending", "running"), interrupted  # re-queued, not lost
        with engine.client() as engine_client:
            deadline = time.monotonic() + 30  # cut its second run short rather than wait a minute
            while interrupted["output"].count("$ sleep 60") < 2:
                assert time.monotonic() < deadline, interrupted
                time.sleep(0.2)
                interrupted = client.get(f"/api/v1/operations/{long_running['operation']['id']}").json()
            engine_client.containers.get(f"vmhost-{long_running['workspace']['id']}").exec_run(
                ["sh", "-c", "ps | grep '[s]leep 60' | awk '{print $1}' | xargs kill"])
            wait_op(client, interrupted["id"])  # ends, either way
            settle(client, timeout=120)
            check_consistent(client, engine_client, daemon.instance, "after SIGTERM and a restart")
