"""100 clients at once, over the socket and TCP, listing, reading, creating, running commands and
deleting for a bounded time: no 5xx, every operation recorded once and run once, event ids without
holes, and the daemon's memory back near where it started. And one user holding as many streamed
commands, waits and shells as it can while another user works: the first is refused past its limits
(429), the second notices nothing. The load comes from processes of its own (loadgen.py), so the tests
measure the daemon, not their client. Load goes only to loopback and the socket."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import create_ws
from httpx_ws import WebSocketDisconnect, connect_ws

from faults.conftest import FaultDaemon, PrivateEngine, check_consistent, settle, unique
from vmhost.config import OPTIONS

CLIENTS = 100
PROCESSES = 4
SHORT_SECONDS = 15
SLOW_SECONDS = 90
# the daemon's resident memory may grow this much over its warmed-up baseline and stay grown
RSS_SLACK_KIB = 64 * 1024
LOADGEN = Path(__file__).with_name("loadgen.py")


def loadgen(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    """A load generator process (tests/faults/loadgen.py); its summary is the last line it prints."""
    return subprocess.Popen([sys.executable, str(LOADGEN), *args], stdin=stdin, stdout=subprocess.PIPE, text=True)


def summary_of(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, f"the load generator failed ({process.returncode}): {output[-2000:]}"
    return json.loads(output.strip().splitlines()[-1])


def operations_in(db_path: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM operations").fetchall()
    finally:
        db.close()


def event_ids(db_path: Path) -> list[int]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return [row[0] for row in db.execute("SELECT id FROM events ORDER BY rowid")]
    finally:
        db.close()


def run_load(daemon: FaultDaemon, engine: PrivateEngine, seconds: float) -> None:
    token = daemon.token("root", admin=True)
    with daemon.client() as client:
        shared = [create_ws(client, unique("shared"))["workspace"]["id"] for _ in range(3)]
        for _ in range(50):  # warm up every code path once before the baseline
            client.get("/api/v1/workspaces")
        settle(client)
    baseline = daemon.rss_kib()

    generators = [loadgen("mixed", "--socket", str(daemon.socket), "--url", daemon.url, "--token", token,
                          "--clients", str(CLIENTS // PROCESSES), "--seconds", str(seconds),
                          "--shared", ",".join(shared), "--seed", str(seed)) for seed in range(PROCESSES)]
    summaries = [summary_of(process, timeout=seconds + 120) for process in generators]
    peak = daemon.rss_kib()
    statuses = sum((Counter(s["statuses"]) for s in summaries), Counter())
    operation_ids = [i for s in summaries for i in s["operation_ids"]]
    print(f"load: {sum(statuses.values())} requests in {seconds} s by {CLIENTS} clients in {PROCESSES} "
          f"processes, {dict(statuses)}, {len(operation_ids)} operations")

    server_errors = [e for s in summaries for e in s["server_errors"]]
    transport_errors = [e for s in summaries for e in s["transport_errors"]]
    assert not server_errors, server_errors[:10]
    assert not transport_errors, transport_errors[:10]

    with daemon.client() as client:
        operations = settle(client, timeout=180)
        assert not [o for o in operations if o["status"] in ("pending", "running")]
        with engine.client() as engine_client:
            check_consistent(client, engine_client, daemon.instance, "after the load")

    stored = operations_in(daemon.db_path)
    stored_ids = Counter(row["id"] for row in stored)
    lost = set(operation_ids) - set(stored_ids)
    assert not lost, f"operations answered 202 but not stored: {sorted(lost)[:10]}"
    assert len(operation_ids) == len(set(operation_ids)), "one operation id answered twice"
    unasked = {row["id"] for row in stored if row["requested_by"] == "root"} - set(operation_ids)
    setup = {row["id"] for row in stored if row["workspace_id"] in shared and row["type"] == "create"}
    assert unasked == setup, f"operations nobody asked for: {sorted(unasked - setup)[:10]}"
    ran_twice = [(row["id"], row["attempts"]) for row in stored if row["attempts"] != 1]
    assert not ran_twice, f"operations run more than once: {ran_twice[:10]}"
    failed = [(row["type"], row["error"]) for row in stored if row["status"] != "succeeded"]
    assert not failed, f"operations failed under load: {failed[:10]}"

    ids = event_ids(daemon.db_path)
    assert ids == list(range(ids[0], ids[0] + len(ids))), "event ids are not strictly increasing without holes"
    with daemon.client() as client:  # and the API pages through the same ids, in order
        served, since = [], 0
        while True:
            page = client.get("/api/v1/events", params={"since": since, "limit": 1000}).json()
            served += [event["id"] for event in page["items"]]
            if not page["items"]:
                break
            since = page["last_id"]
    assert served[:len(ids)] == ids, "GET /api/v1/events skipped, repeated or reordered events"
    assert served == sorted(set(served)), "GET /api/v1/events repeated or reordered events"

    time.sleep(2)
    after = daemon.rss_kib()
    print(f"daemon VmRSS: baseline {baseline} KiB, end of load {peak} KiB, after {after} KiB")
    assert after <= baseline + RSS_SLACK_KIB, f"VmRSS {after} KiB stays far above its baseline {baseline} KiB"


def test_100_mixed_clients_no_5xx_no_lost_or_duplicated_operations_event_ids_without_holes(
        fault_daemon: Any, engine: PrivateEngine) -> None:
    run_load(fault_daemon(), engine, SHORT_SECONDS)


@pytest.mark.slow
def test_100_mixed_clients_longer_no_5xx_and_memory_back_near_baseline(fault_daemon: Any,
                                                                      engine: PrivateEngine) -> None:
    run_load(fault_daemon(), engine, SLOW_SECONDS)


# as many as the hostile user opened, and as many as the default limits let one user hold
FLOOD = {"streams": 160, "waits": 270, "shells": 40}
DEFAULTS = {option.name: option.default() for option in OPTIONS}
HELD = {"streams": DEFAULTS["user_max_command_streams"], "waits": DEFAULTS["user_max_waits"],
        "shells": DEFAULTS["user_max_shells"]}
ANSWER_WITHIN = 10  # seconds: a generous bound for another user's requests while the flood is held


def test_one_user_holding_streams_waits_and_shells_leaves_another_user_unaffected(
        fault_daemon: Any, engine: PrivateEngine) -> None:
    daemon = fault_daemon()
    flooder, victim = daemon.token("mallory"), daemon.token("victor")
    with daemon.tcp(token=flooder) as mallory, daemon.tcp(token=victim) as victor:
        target = create_ws(mallory, unique("flood"))["workspace"]["id"]
        own = create_ws(victor, unique("victim"))["workspace"]["id"]
        long = mallory.post(f"/api/v1/workspaces/{target}/commands",
                            json={"argv": ["sleep", "120"], "timeout_seconds": 150}).json()
    flood = loadgen("flood", "--url", daemon.url, "--token", flooder, "--workspace", target, "--operation",
                    long["id"], *(f"--{kind}={count}" for kind, count in FLOOD.items()), stdin=subprocess.PIPE)
    try:
        assert flood.stdout is not None and flood.stdout.readline().strip() == "holding"
        with httpx.Client(base_url=daemon.url, headers={"Authorization": f"Bearer {victim}"},
                          timeout=ANSWER_WITHIN) as victor:
            for _ in range(3):  # every request answers within the bound, or the client's timeout fails the test
                assert victor.get(f"/api/v1/workspaces/{own}").status_code == 200
                assert victor.get("/health").status_code == 200
                lines = victor.post(f"/api/v1/workspaces/{own}/commands",
                                    json={"argv": ["echo", "hi"], "stream": True}).text.splitlines()
                assert json.loads(lines[-1])["exit_code"] == 0, lines
                operation = victor.post(f"/api/v1/workspaces/{own}/commands", json={"argv": ["true"]}).json()
                for _ in range(6):  # each wait answers within the bound; the command may take longer on a slow machine
                    waited = victor.get(f"/api/v1/operations/{operation['id']}/wait", params={"timeout": 5})
                    if waited.json()["status"] not in ("pending", "running"):
                        break
                assert waited.json()["status"] == "succeeded", waited.text
                with connect_ws(f"/ws/workspaces/{own}/shell?argv=true", victor) as shell, \
                        pytest.raises(WebSocketDisconnect) as ended:
                    while True:
                        shell.receive(timeout=ANSWER_WITHIN)
                assert ended.value.code == 1000
                with connect_ws("/ws/events", victor) as events:
                    assert events.receive_json(timeout=ANSWER_WITHIN)["type"] == "heartbeat"
    finally:
        summary = summary_of(flood, timeout=60)  # closes its standard input: it lets go and reports
        with daemon.tcp(token=flooder) as mallory:  # so that the daemon need not wait for it when it stops
            mallory.delete(f"/api/v1/operations/{long['id']}")
    print(f"flood: {summary}")
    assert not summary["server_errors"], summary["server_errors"][:10]
    assert not summary["transport_errors"], summary["transport_errors"][:10]
    statuses = summary["statuses"]
    assert statuses.get("stream 200") == HELD["streams"], statuses
    assert statuses.get("stream 429") == FLOOD["streams"] - HELD["streams"], statuses
    assert statuses.get("shell held") == HELD["shells"], statuses
    assert statuses.get("shell 4429") == FLOOD["shells"] - HELD["shells"], statuses
    assert statuses.get("wait 429") == FLOOD["waits"] - HELD["waits"], statuses
    assert summary["retry_after"] == ["5"]
