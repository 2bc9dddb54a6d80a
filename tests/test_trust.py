"""Trust, as a hostile user tests it: proxy trust decided on the connection's real peer, one validated
namespace of user names, no credential in URLs of REST calls or in the log, revocation that ends open
sessions, audit entries when a session starts, and no cross-origin mutations from a browser."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from conftest import Daemon, create_ws
from httpx_ws import WebSocketDisconnect, connect_ws

from vmhost.config import Settings
from vmhost.core import validation
from vmhost.daemon.auth import JUDGED_HOSTS, Authenticator
from vmhost.daemon.logs import redact
from vmhost.daemon.origin import same_origin
from vmhost.errors import InvalidInput

FORWARDED_FROM_LOOPBACK = {"X-VM-User": "alice", "X-Forwarded-For": "127.0.0.2"}


def audit_entries(daemon: Daemon, **params: Any) -> list[dict[str, Any]]:
    with daemon.client() as root:
        return root.get("/api/v1/audit", params=params).json()["items"]


def wait_for_entry(daemon: Daemon, match: Any, timeout: float = 30, **params: Any) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in audit_entries(daemon, **params) if match(e)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no such audit entry in {audit_entries(daemon, **params)}"
        time.sleep(0.2)


def closed_with(ws: Any, timeout: float = 30) -> tuple[int, str]:
    """Read (and drop) frames until the server closes; its code and reason."""
    with pytest.raises(WebSocketDisconnect) as closed:
        deadline = time.monotonic() + timeout
        while True:
            ws.receive(timeout=max(0.1, deadline - time.monotonic()))
    return closed.value.code, closed.value.reason


def new_token(daemon: Daemon, user: str) -> tuple[str, str]:
    """(id, secret) of a fresh write token of `user`'s."""
    with daemon.client() as root:
        created = root.post("/api/v1/tokens", json={"user": user}).json()
    return created["token"]["id"], created["secret"]


def test_x_forwarded_for_from_loopback_does_not_make_a_trusted_proxy(make_daemon, name: str) -> None:
    # the curl: sent from 127.0.0.1 with no token, claiming to come through the proxy 127.0.0.2
    process = make_daemon({"VMHOST_TRUSTED_PROXIES": "127.0.0.2"})
    with process.tcp(headers=FORWARDED_FROM_LOOPBACK) as forger:
        refused = forger.get("/api/v1/me")
        assert refused.status_code == 401, refused.text
        assert "127.0.0.1 is not one" in refused.json()["detail"]
        with connect_ws(f"/ws/workspaces/{name}/shell", forger) as ws:
            assert closed_with(ws)[0] == 4401
        assert forger.post("/api/v1/tokens", json={}).status_code == 401
    refusal = wait_for_entry(process, lambda e: e["path"] == "/api/v1/tokens")
    assert (refusal["address"], refusal["forwarded_for"], refusal["status"]) == ("127.0.0.1", None, 401)


def test_audit_takes_a_forwarded_address_only_from_a_trusted_proxy(make_daemon) -> None:
    process = make_daemon({"VMHOST_TRUSTED_PROXIES": "127.0.0.1"})
    chain = "198.51.100.7, 127.0.0.1"  # the client, then a trusted proxy in front of the last one
    with process.tcp(headers={"X-VM-User": "carol", "X-Forwarded-For": chain}) as carol:
        assert carol.post("/api/v1/tokens", json={}).status_code == 201
    with process.tcp(process.token("dan"), headers={"X-Forwarded-For": chain}) as dan:
        assert dan.post("/api/v1/tokens", json={}).status_code == 201
    carols = audit_entries(process, user="carol")[0]
    assert (carols["door"], carols["address"], carols["forwarded_for"]) == ("proxy", "127.0.0.1", "198.51.100.7")

    untrusted = make_daemon({"VMHOST_TRUSTED_PROXIES": "127.0.0.2"})
    with untrusted.tcp(untrusted.token("erin"), headers={"X-Forwarded-For": "198.51.100.7"}) as erin:
        assert erin.post("/api/v1/tokens", json={}).status_code == 201
    erins = audit_entries(untrusted, user="erin")[0]
    assert (erins["door"], erins["address"], erins["forwarded_for"]) == ("token", "127.0.0.1", None)


def test_a_proxy_may_not_name_a_system_account_or_a_malformed_name(make_daemon) -> None:
    process = make_daemon({"VMHOST_TRUSTED_PROXIES": "127.0.0.1"})
    for system in ("root", "Root", "daemon", "nobody"):
        with process.tcp(headers={"X-VM-User": system}) as proxy:
            refused = proxy.get("/api/v1/workspaces")
            assert refused.status_code == 401, refused.text
            assert "system account of this host" in refused.json()["detail"]
    with process.tcp(headers={"X-VM-User": "uid4242"}) as proxy:  # the socket's name for an unnamed uid
        assert proxy.get("/api/v1/me").status_code == 401
    for malformed in ("bad name", "-rf", "a/b", ".hidden", "x" * 129):
        with process.tcp(headers={"X-VM-User": malformed}) as proxy:
            refused = proxy.get("/api/v1/me")
            assert refused.status_code == 401 and "invalid user name" in refused.json()["detail"], malformed
    with process.tcp(headers={"X-VM-User": "carol", "X-VM-Email": "not an email"}) as proxy:
        assert proxy.get("/api/v1/me").status_code == 401
    with process.tcp(headers={"X-VM-User": "carol", "X-VM-Email": "carol@example.invalid"}) as proxy:
        assert proxy.get("/api/v1/me").json()["email"] == "carol@example.invalid"


def test_a_duplicated_identity_header_is_refused(make_daemon) -> None:
    process = make_daemon({"VMHOST_TRUSTED_PROXIES": "127.0.0.1"})
    twice = {"X-VM-User": ("alice", "bob"), "X-VM-Email": ("a@example.invalid", "b@example.invalid"),
             "Authorization": (f"Bearer {process.token('alice')}", f"Bearer {process.token('bob')}")}
    with httpx.Client(base_url=process.url, timeout=60) as client:
        for header, values in twice.items():
            proxied = [] if header == "X-VM-User" else [("X-VM-User", "carol")]
            refused = client.get("/api/v1/me", headers=[*proxied, *((header, value) for value in values)])
            assert refused.status_code == 401, refused.text
            assert refused.json()["detail"] == f"the {header} header was sent 2 times; send it once"


def test_a_token_in_the_url_works_on_websockets_only_and_never_reaches_the_log(make_daemon) -> None:
    process = make_daemon()
    secret = process.token("ursula")
    with httpx.Client(base_url=process.url, timeout=60) as client:
        refused = client.get("/api/v1/me", params={"token": secret})
        assert refused.status_code == 401 and "WebSocket routes only" in refused.json()["detail"]
        with connect_ws(f"/ws/events?token={secret}", client) as ws:
            assert json.loads(ws.receive_text(timeout=30))["type"] == "heartbeat"
    log = process.log()
    assert "WebSocket /ws/events?token=[redacted]" in log  # the handshake's line is there, without its secret
    assert secret not in log and secret.removeprefix("vmh_") not in log


def test_revoking_a_token_ends_its_open_sessions(daemon: Daemon, name: str) -> None:
    token_id, secret = new_token(daemon, f"rex-{name}")
    with daemon.tcp(secret) as rex, daemon.tcp() as browser:
        create_ws(rex, name)
        with connect_ws(f"/ws/workspaces/{name}/shell", rex) as shell, \
                connect_ws(f"/ws/events?token={secret}", browser) as events, \
                rex.stream("GET", f"/api/v1/workspaces/{name}/logs", params={"follow": True}) as logs, \
                rex.stream("POST", f"/api/v1/workspaces/{name}/commands",
                           json={"argv": ["sleep", "600"], "stream": True}) as command:
            shell.send_bytes(b"echo ready\n")
            events.receive_text(timeout=30)
            with daemon.client() as root:
                assert root.delete(f"/api/v1/tokens/{token_id}").status_code == 200
            assert closed_with(shell) == (4401, "this API token was revoked")
            assert closed_with(events) == (4401, "this API token was revoked")
            logs.read()  # the follow ends instead of waiting for output
            lines = [json.loads(line) for line in command.iter_lines() if line]
            assert lines[-1]["cancelled"] is True
        assert rex.get("/api/v1/me").status_code == 401


def test_a_shell_and_a_streamed_command_are_audited_when_they_start(daemon: Daemon, name: str) -> None:
    user = f"sue-{name}"
    with daemon.tcp(daemon.token(user)) as sue:
        create_ws(sue, name)
        with connect_ws(f"/ws/workspaces/{name}/shell", sue) as shell:
            started = wait_for_entry(daemon, lambda e: e["method"] == "WS", user=user)
            assert (started["path"], started["status"], started["phase"]) == (f"/ws/workspaces/{name}/shell", 101,
                                                                              "start")
            shell.send_bytes(b"exit\n")
            closed_with(shell)
        ended = wait_for_entry(daemon, lambda e: e["method"] == "WS" and e["phase"] == "end", user=user)
        assert ended["status"] == 101
        with sue.stream("POST", f"/api/v1/workspaces/{name}/commands",
                        json={"argv": ["sleep", "600"], "stream": True}) as command:
            assert command.status_code == 200
            started = wait_for_entry(daemon, lambda e: e["action"] == "run_command", user=user)
            assert (started["status"], started["phase"]) == (200, "start")
        wait_for_entry(daemon, lambda e: e["action"] == "run_command" and e["phase"] == "end", user=user)


def test_a_cross_origin_browser_request_may_not_change_anything(daemon: Daemon, name: str) -> None:
    secret = daemon.token(f"olga-{name}")
    with daemon.tcp(secret) as olga:
        create_ws(olga, name)
        foreign = {"Origin": "https://evil.example"}
        for path in (f"/api/v1/workspaces/{name}/actions/stop", f"/api/v1/workspaces/{name}/snapshots/x/restore"):
            refused = olga.post(path, headers=foreign)  # body-less, as a form or fetch() from any page can send
            assert refused.status_code == 403, refused.text
            assert "cross-origin request refused" in refused.json()["detail"]
        with connect_ws(f"/ws/workspaces/{name}/shell", olga, headers=foreign) as ws:
            assert closed_with(ws)[0] == 4403
        assert olga.get(f"/api/v1/workspaces/{name}").json()["status"] == "running"
        own = {"Origin": daemon.url}  # the daemon's own page
        assert olga.post(f"/api/v1/workspaces/{name}/actions/stop", headers=own).status_code == 202
        assert olga.post(f"/api/v1/workspaces/{name}/actions/start").status_code in (202, 409)  # no Origin: curl


def test_one_user_name_rule_and_origin_matching() -> None:
    for bad in ("alice\n", "", "a b", "-x", "x" * 129, 7):
        with pytest.raises(InvalidInput):
            validation.check_user(bad)
    assert validation.check_user("alice.o_neil+dev@example") == "alice.o_neil+dev@example"
    assert same_origin("http://127.0.0.1:3121", ["127.0.0.1:3121"])
    assert same_origin("https://VM.example", ["vm.example:443"])
    for foreign in ("null", "https://evil.example", "http://127.0.0.1:3122", "file://", "http://127.0.0.1"):
        assert not same_origin(foreign, ["127.0.0.1:3121"]), foreign
    assert redact("/ws/events?since=1&token=vmh_s3cr3t&types=x") == "/ws/events?since=1&token=[redacted]&types=x"
    assert redact("secret vmh_s3cr3t-x_y here") == "secret vmh_[redacted] here"


def test_trusted_proxy_answers_are_remembered_for_a_bounded_number_of_peers() -> None:
    settings = Settings.load(env={"VMHOST_TRUSTED_PROXIES": "10.0.0.0/8"})
    authenticator = Authenticator(settings, orchestrator=None)  # type: ignore[arg-type]  (not asked here)
    for n in range(JUDGED_HOSTS + 10):  # a flood of peers costs parsing again, not memory
        host = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        assert authenticator.is_trusted_proxy(host) and authenticator.is_trusted_proxy(host)
        assert not authenticator.is_trusted_proxy(f"192.0.2.{n & 255}")
    assert len(authenticator._judged) <= JUDGED_HOSTS
    assert not authenticator.is_trusted_proxy("not an address")
    untrusting = Authenticator(Settings.load(env={}), orchestrator=None)  # type: ignore[arg-type]
    assert not untrusting.is_trusted_proxy("10.0.0.1")
