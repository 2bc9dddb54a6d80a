"""What crosses a port's preview each way, its cookie, and when a preview session starts (no Docker)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vmhost.core.models import Caller, Door, Scope, Workspace, WorkspaceStatus
from vmhost.core.orchestrator import Orchestrator, WorkspaceRequest
from vmhost.daemon.preview import (
    Forwarding,
    PreviewCookies,
    PreviewSessions,
    cookie_values,
    downstream_headers,
    sandboxed,
    upstream_headers,
    without_vmhost_cookies,
)
from vmhost.daemon.preview_host import PreviewHost, parse_host, preview_label, preview_url, workspace_of
from vmhost.daemon.preview_socket import sendable, socket_headers
from vmhost.errors import Unauthenticated, WorkspaceNotFound


def test_upstream_headers_drop_hop_by_hop_and_credentials_and_say_who_forwards() -> None:
    sent = [(b"Host", b"vmhost.example"), (b"Authorization", b"Bearer vmh_secret"), (b"X-VM-User", b"alice"),
            (b"X-VM-Groups", b"admins"),
            (b"Connection", b"keep-alive, X-Private"), (b"X-Private", b"1"), (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Authorization", b"Basic x"), (b"TE", b"trailers"), (b"Upgrade", b"h2c"),
            (b"Transfer-Encoding", b"chunked"), (b"X-Forwarded-For", b"6.6.6.6"), (b"Forwarded", b"for=6.6.6.6"),
            (b"Cookie", b"vmhost_preview=abc; app=1; VMHOST_x=2"), (b"Accept", b"text/html"),
            (b"Content-Length", b"3")]
    forwarded = upstream_headers(sent, Forwarding(["10.0.0.9", "2001:db8::1"], "https", "vmhost.example"))
    assert forwarded == [
        (b"cookie", b"app=1"), (b"accept", b"text/html"), (b"content-length", b"3"),
        (b"x-forwarded-for", b"10.0.0.9, 2001:db8::1"), (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"vmhost.example"),
        (b"forwarded", b'for=10.0.0.9, for="[2001:db8::1]";host="vmhost.example";proto=https')]
    # on the Unix socket: no address, and only vmhost's cookies: no Cookie header at all
    alone = upstream_headers([(b"cookie", b"vmhost_preview=abc")], Forwarding([], "http", None))
    assert alone == [(b"x-forwarded-proto", b"http"), (b"forwarded", b"proto=http")]
    assert without_vmhost_cookies(b"a=1;vmhost_preview=x;  b=2") == b"a=1; b=2"


def test_downstream_headers_keep_the_answer_but_hop_by_hop() -> None:
    answer = [(b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"),
              (b"Connection", b"close"), (b"Transfer-Encoding", b"chunked"), (b"Date", b"x"), (b"Server", b"y"),
              (b"Content-Length", b"10")]
    assert downstream_headers(answer) == [(b"content-type", b"text/plain"), (b"set-cookie", b"a=1"),
                                          (b"set-cookie", b"b=2"), (b"content-length", b"10")]


def test_a_preview_cookie_stands_for_its_caller_on_its_port_until_it_expires() -> None:
    now = [1000.0]
    cookies = PreviewCookies(lifetime=3600, clock=lambda: now[0])
    reader = Caller(user="alice", door=Door.TOKEN, scope=Scope.READ, token_id="tok_1")
    value = cookies.issue(reader, "ws_1", 8080)
    assert cookies.caller(value, "ws_1", 8080, "10.0.0.9") == Caller(
        user="alice", door=Door.TOKEN, address="10.0.0.9", scope=Scope.READ, token_id="tok_1")
    with pytest.raises(Unauthenticated, match="another port"):
        cookies.caller(value, "ws_1", 9000, None)
    with pytest.raises(Unauthenticated, match="another port"):
        cookies.caller(value, "ws_2", 8080, None)
    payload, _, signature = value.partition(".")
    forged = cookies.issue(Caller(user="mallory", admin=True), "ws_1", 8080).partition(".")[0]
    with pytest.raises(Unauthenticated, match="not valid"):
        cookies.caller(f"{forged}.{signature}", "ws_1", 8080, None)
    with pytest.raises(Unauthenticated, match="not valid"):
        PreviewCookies().caller(value, "ws_1", 8080, None)  # another daemon's key (or a restart)
    for garbage in ("", "no-dot", "é.é"):
        with pytest.raises(Unauthenticated, match="not valid"):
            cookies.caller(garbage, "ws_1", 8080, None)
    now[0] += 3601
    with pytest.raises(Unauthenticated, match="expired"):
        cookies.caller(value, "ws_1", 8080, None)


def test_a_preview_session_starts_after_a_quiet_gap_and_tracking_is_bounded() -> None:
    now = [0.0]
    sessions = PreviewSessions(gap=600, max_tracked=2, clock=lambda: now[0])
    assert sessions.starts("alice", "ws_1", 8080)
    now[0] = 500
    assert not sessions.starts("alice", "ws_1", 8080)
    now[0] = 1000  # 500 s after the last request: the same session
    assert not sessions.starts("alice", "ws_1", 8080)
    assert sessions.starts("bob", "ws_1", 8080) and sessions.starts("alice", "ws_1", 3000)
    assert sessions.starts("alice", "ws_1", 8080)  # forgotten: three tracked, at most two kept
    now[0] = 1601
    assert sessions.starts("alice", "ws_1", 8080)


def test_the_sandbox_is_added_to_the_apps_own_policies() -> None:
    sandbox = (b"content-security-policy",
               b"sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads")
    assert sandboxed([(b"content-type", b"text/html")]) == [(b"content-type", b"text/html"), sandbox]
    # the app's policies stay (a browser enforces each one); its own sandbox cannot grant allow-same-origin
    # back, as of two sandbox directives the browser keeps the flags both allow
    own = [(b"content-security-policy", b"default-src 'self'"),
           (b"content-security-policy", b"sandbox allow-same-origin allow-scripts"),
           (b"content-security-policy-report-only", b"script-src 'none'")]
    assert sandboxed(own) == [*own, sandbox]


def test_a_websocket_goes_on_with_the_apps_headers_but_its_own_handshake() -> None:
    sent = [(b"host", b"vmhost.example"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"),
            (b"sec-websocket-key", b"abc=="), (b"sec-websocket-version", b"13"),
            (b"sec-websocket-protocol", b"chat"), (b"sec-websocket-extensions", b"permessage-deflate"),
            (b"user-agent", b"browser"), (b"origin", b"http://vmhost.example"), (b"authorization", b"Bearer x"),
            (b"x-app", b"1")]
    assert socket_headers(sent, Forwarding([], "http", None)) == [
        (b"origin", b"http://vmhost.example"), (b"x-app", b"1"), (b"x-forwarded-proto", b"http"),
        (b"forwarded", b"proto=http")]
    assert [sendable(code) for code in (None, 1000, 1001, 1005, 1006, 4000)] == [1000, 1000, 1001, 1000, 1011, 4000]


def test_preview_host_names() -> None:
    assert parse_host("8080--web--alice.preview.test:8443", "preview.test") == PreviewHost(
        "8080--web--alice.preview.test", 8080, "web--alice")
    assert parse_host("8080--WEB--Alice.Preview.Test.", "preview.test") == PreviewHost(
        "8080--web--alice.preview.test", 8080, "web--alice")
    assert parse_host("vmhost.example", "preview.test") is None and parse_host("preview.test", "preview.test") is None
    assert parse_host("web.preview.test", "preview.test") == PreviewHost("web.preview.test", 0, "")
    assert parse_host("1--a.b--c.preview.test", "preview.test") == PreviewHost("1--a.b--c.preview.test", 0, "")


def a_workspace(name: str, owner: str) -> Workspace:
    now = datetime.now(UTC)
    return Workspace(id="ws_1", name=name, owner=owner, template="t", image="i", status=WorkspaceStatus.RUNNING,
                     created_at=now, updated_at=now)


def test_a_preview_host_finds_its_workspace_where_owners_hold_dashes(orchestrator: Orchestrator) -> None:
    for owner, name in (("a--b", "web"), ("b", "web--a"), ("alice", "web")):
        orchestrator.create(Caller(user=owner), WorkspaceRequest(name=name, template="base"))

    def found(rest: str) -> tuple[str, str]:
        workspace = workspace_of(orchestrator.store, PreviewHost(f"1--{rest}.p", 1, rest))
        return workspace.owner, workspace.name

    assert found("web--alice") == ("alice", "web")
    assert found("web--a--b") == ("a--b", "web")  # the first '--' ends the workspace's name
    for rest in ("web--bob", "web", "--alice"):
        with pytest.raises(WorkspaceNotFound):
            found(rest)


def test_preview_urls_on_own_hosts_need_an_owner_dns_can_name() -> None:
    workspace = a_workspace("web", "alice")
    assert preview_url("p.test", 3000, workspace, "https", "vmhost.example") == "https://3000--web--alice.p.test/"
    assert preview_url("p.test", 3000, workspace, "http", "127.0.0.1:8400") == "http://3000--web--alice.p.test:8400/"
    assert preview_url("", 3000, workspace, "http", None) is None
    assert preview_label(3000, a_workspace("web", "a--b")) == "3000--web--a--b"
    for name, owner in (("web", "Alice"), ("web", "a_b"), ("web", "a@example.com"), ("web", "a" * 60),
                        ("web--a", "b")):
        assert preview_label(3000, a_workspace(name, owner)) is None


def test_a_preview_link_is_for_one_host_and_used_once() -> None:
    now = [1000.0]
    cookies = PreviewCookies(clock=lambda: now[0])
    caller = Caller(user="alice", door=Door.TOKEN, scope=Scope.READ, token_id="tok_1")
    ticket = cookies.issue_ticket(caller, "ws_1", 3000, "3000--web--alice.p.test")
    with pytest.raises(Unauthenticated, match="another preview"):
        cookies.redeem(ticket, "3001--web--alice.p.test")
    with pytest.raises(Unauthenticated, match="another port"):  # a link is no cookie
        cookies.caller(ticket, "ws_1", 3000, None)
    cookie = cookies.redeem(ticket, "3000--web--alice.p.test")
    assert cookies.caller(cookie, "ws_1", 3000, "10.0.0.1") == Caller(
        user="alice", door=Door.TOKEN, scope=Scope.READ, token_id="tok_1", address="10.0.0.1")
    with pytest.raises(Unauthenticated, match="has been used"):
        cookies.redeem(ticket, "3000--web--alice.p.test")
    late = cookies.issue_ticket(caller, "ws_1", 3000, "3000--web--alice.p.test")
    now[0] += 61
    with pytest.raises(Unauthenticated, match="expired"):
        cookies.redeem(late, "3000--web--alice.p.test")


def test_a_valid_preview_cookie_counts_beside_others_of_its_name() -> None:
    cookies = PreviewCookies()
    mine = cookies.issue(Caller(user="alice"), "ws_1", 3000)
    header = f"vmhost_preview=tossed-by-a-sibling; app=1; vmhost_preview={mine}"
    assert cookie_values([header, "x=2"], "vmhost_preview") == ["tossed-by-a-sibling", mine]
    assert cookies.caller_of_any(cookie_values([header], "vmhost_preview"), "ws_1", 3000, None).user == "alice"
    with pytest.raises(Unauthenticated, match="not valid"):
        cookies.caller_of_any(["tossed", "again"], "ws_1", 3000, None)
