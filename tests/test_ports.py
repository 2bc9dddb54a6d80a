"""A workspace's ports: the list, sharing, the raw TCP tunnel WebSocket (who may open one, clean closes,
revocation, the idle timeout, the per-user limit), `vmhost ws port-forward` with many connections, and
the HTTP preview (who may use it, what crosses it, a large download, its cookie, the per-user limit).
The workspace serves a page and a CGI echo with busybox's `httpd -p 8080` and echoes TCP with
`nc -ll -p 9000 -e cat`."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import wsproto.events
from conftest import Daemon, OnEngine, all_items, create_ws
from httpx_ws import WebSocketDisconnect, WebSocketSession, connect_ws

PAGE = "hello from the workspace"
# /cgi-bin/echo answers with the request as its server got it: the CGI environment (method, query,
# HTTP_* headers) and the body
ECHO_CGI = ("#!/bin/sh\necho Content-Type: text/plain\necho X-Echo: yes\necho Content-Security-Policy: img-src data:\n"
            "echo\nenv | sort\necho BODY:\ncat\n")
SANDBOX = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
SERVERS = (f"echo '{PAGE}' > /workspace/index.html; mkdir -p /workspace/cgi-bin; "
           f"printf '{ECHO_CGI}' > /workspace/cgi-bin/echo; chmod +x /workspace/cgi-bin/echo; "
           "httpd -p 8080 -h /workspace; nc -ll -p 9000 -e cat </dev/null >/dev/null 2>&1 &")


def serving_workspace(client: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    """A running workspace with the page server on 8080 and the echo server on 9000, both listening."""
    workspace = create_ws(client, name, **body)["workspace"]
    started = client.post(f"/api/v1/workspaces/{name}/commands", json={"argv": ["sh", "-c", SERVERS],
                                                                        "stream": True})
    assert started.status_code == 200, started.text
    deadline = time.monotonic() + 20
    while not {8080, 9000} <= {p["port"] for p in ports(client, name) if p["listening"]}:
        assert time.monotonic() < deadline, ports(client, name)
        time.sleep(0.1)
    return workspace


def ports(client: httpx.Client, ref: str) -> list[dict[str, Any]]:
    response = client.get(f"/api/v1/workspaces/{ref}/ports")
    assert response.status_code == 200, response.text
    return response.json()["items"]


def tunnel(client: httpx.Client, ref: str, port: int) -> Any:
    return connect_ws(f"/ws/workspaces/{ref}/ports/{port}", client)


def receive_until_closed(ws: WebSocketSession, timeout: float = 20) -> tuple[bytes, int, str]:
    """Every byte the tunnel sends until the daemon closes it, and its close code and reason."""
    data = b""
    deadline = time.monotonic() + timeout
    with pytest.raises(WebSocketDisconnect) as closed:
        while True:
            event = ws.receive(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(event, wsproto.events.BytesMessage):
                data += bytes(event.data)
    return data, closed.value.code, closed.value.reason


def echo(ws: WebSocketSession, payload: bytes) -> bytes:
    ws.send_bytes(payload)
    received = b""
    while len(received) < len(payload):
        received += ws.receive_bytes(timeout=20)
    return received


def close_code(client: httpx.Client, ref: str, port: int) -> tuple[int, str]:
    with tunnel(client, ref, port) as ws:
        _, code, reason = receive_until_closed(ws)
    return code, reason


def test_owner_lists_ports_and_tunnels_both_ways(engine_api: httpx.Client, name: str) -> None:
    """On one engine the daemon connects to the container's address; on Swarm, through the workspace's
    node (a relay command in the container)."""
    api = engine_api
    workspace = serving_workspace(api, name)
    listed = {p["port"]: p for p in ports(api, name)}
    assert listed[8080] == {"port": 8080, "listening": True, "in_template": False, "label": None, "sharing": "private",
                            "preview_url": f"/api/v1/workspaces/{workspace['id']}/ports/8080/proxy/",
                            "tunnel_url": f"/ws/workspaces/{workspace['id']}/ports/8080"}
    assert listed[9000]["listening"]

    with tunnel(api, name, 9000) as ws:
        assert echo(ws, b"ping\n") == b"ping\n"
        big = bytes(range(256)) * 4096  # 1 MiB, more than any buffer on the way
        assert echo(ws, big) == big
    # the workspace's side closes: the client gets everything, then a clean close
    with tunnel(api, name, 8080) as ws:
        ws.send_bytes(b"GET /index.html HTTP/1.0\r\n\r\n")
        data, code, _ = receive_until_closed(ws)
    assert data.startswith(b"HTTP/1.1 200 OK") and PAGE.encode() in data and code == 1000
    # the client says it has sent everything: the answer still comes
    with tunnel(api, name, 9000) as ws:
        ws.send_bytes(b"last words\n")
        ws.send_text(json.dumps({"type": "eof"}))
        data, code, _ = receive_until_closed(ws)
    assert data == b"last words\n" and code == 1000
    page = api.get(listed[8080]["preview_url"] + "index.html")
    assert page.status_code == 200 and page.text == PAGE + "\n"

    code, reason = close_code(api, name, 9999)
    assert code == 4409 and "nothing answers on port 9999" in reason
    assert api.get(f"/api/v1/workspaces/{name}/ports/9999/proxy/").status_code == 502
    entries = api.get("/api/v1/audit", params={"workspace": name}).json()["items"]
    assert {(e["path"], e["phase"]) for e in entries} >= {(f"/ws/workspaces/{name}/ports/9000", "start"),
                                                         (f"/ws/workspaces/{name}/ports/9000", "end")}


def test_template_ports_are_listed_when_stopped(api: httpx.Client, name: str) -> None:
    create_ws(api, name, template="web")
    stop = api.post(f"/api/v1/workspaces/{name}/actions/stop")
    assert stop.status_code == 202
    api.get(f"/api/v1/operations/{stop.json()['id']}/wait", params={"timeout": 60})
    assert ports(api, name) == [{"port": 8080, "listening": False, "in_template": True, "label": None,
                                 "sharing": "private",
                                 "preview_url": f"/api/v1/workspaces/{stop.json()['workspace_id']}/ports/8080/proxy/",
                                 "tunnel_url": f"/ws/workspaces/{stop.json()['workspace_id']}/ports/8080"}]
    assert close_code(api, name, 8080)[0] == 4409


def test_who_may_list_share_and_tunnel(daemon: Daemon, name: str) -> None:
    alice = daemon.token(f"alice-{name}")
    reader = daemon.token(f"alice-{name}", scope="read")
    bob = daemon.token(f"bob-{name}")
    with daemon.tcp(token=alice) as as_alice, daemon.tcp(token=bob) as as_bob, \
            daemon.tcp(token=reader) as as_reader, daemon.tcp() as nobody:
        workspace = serving_workspace(as_alice, name)
        ws_id = workspace["id"]
        assert close_code(nobody, ws_id, 9000)[0] == 4401
        assert nobody.get(f"/api/v1/workspaces/{ws_id}/ports").status_code == 401
        assert close_code(as_bob, ws_id, 9000)[0] == 4404
        assert as_bob.get(f"/api/v1/workspaces/{ws_id}/ports").status_code == 404
        assert len(ports(as_reader, name)) >= 2  # a read token lists, but opens no tunnel
        assert close_code(as_reader, name, 9000) == (4403, "this token is read-only: it may not open a tunnel")
        share = {"level": "authenticated"}
        assert as_reader.put(f"/api/v1/workspaces/{name}/ports/9000/sharing", json=share).status_code == 403
        assert as_bob.put(f"/api/v1/workspaces/{ws_id}/ports/9000/sharing", json=share).status_code == 404

        shared = as_alice.put(f"/api/v1/workspaces/{name}/ports/9000/sharing", json=share)
        assert shared.status_code == 200 and shared.json()["sharing"] == "authenticated"
        assert {p["port"]: p["sharing"] for p in ports(as_alice, name)}[9000] == "authenticated"
        with tunnel(as_bob, ws_id, 9000) as ws:  # by the workspace's id: bob's names are his own
            assert echo(ws, b"shared\n") == b"shared\n"
        assert close_code(as_bob, ws_id, 8080)[0] == 4404  # only the shared port
        assert as_bob.get(f"/api/v1/workspaces/{ws_id}/ports").status_code == 404  # and nothing else
        assert as_bob.get(f"/api/v1/workspaces/{ws_id}").status_code == 404

        private = as_alice.put(f"/api/v1/workspaces/{name}/ports/9000/sharing", json={"level": "private"})
        assert private.json()["sharing"] == "private"
        assert close_code(as_bob, ws_id, 9000)[0] == 4404
        bad = as_alice.put(f"/api/v1/workspaces/{name}/ports/9000/sharing", json={"level": "everyone"})
        assert bad.status_code == 422


def test_revoking_a_token_ends_its_tunnels(daemon: Daemon, api: httpx.Client, name: str) -> None:
    created = api.post("/api/v1/tokens", json={"user": f"carol-{name}"}).json()
    with daemon.tcp(token=created["secret"]) as as_carol:
        serving_workspace(as_carol, name)
        with tunnel(as_carol, name, 9000) as ws:
            assert echo(ws, b"before\n") == b"before\n"
            assert api.delete(f"/api/v1/tokens/{created['token']['id']}").status_code == 200
            _, code, reason = receive_until_closed(ws)
    assert (code, reason) == (4401, "this API token was revoked")


def test_idle_tunnels_close_and_each_user_has_a_limit(make_daemon: Any, name: str) -> None:
    daemon = make_daemon({"VMHOST_TUNNEL_IDLE_TIMEOUT": "1", "VMHOST_USER_MAX_TUNNELS": "2"})
    with daemon.client() as root, daemon.tcp(token=daemon.token("dora")) as as_dora:
        serving_workspace(root, name)
        other = serving_workspace(as_dora, f"{name}-d")
        with tunnel(root, name, 9000) as first, tunnel(root, name, 9000) as second:
            assert echo(first, b"1\n") == b"1\n" and echo(second, b"2\n") == b"2\n"
            code, reason = close_code(root, name, 9000)
            assert code == 4429 and "too many tunnels at once" in reason
            with tunnel(as_dora, other["id"], 9000) as hers:  # another user is unaffected
                assert echo(hers, b"3\n") == b"3\n"
            _, code, reason = receive_until_closed(first)
            assert (code, reason) == (4408, "no traffic for 1 s")


@pytest.fixture
def port_forward() -> Iterator[Any]:
    """Start `vmhost ws port-forward` with arguments on a daemon; answers the process and the local ports
    it listens on."""
    started: list[subprocess.Popen[str]] = []

    def start(daemon: Daemon, *args: str) -> tuple[subprocess.Popen[str], list[int]]:
        process = subprocess.Popen([sys.executable, "-m", "vmhost", "ws", "port-forward", *args],
                                   env=daemon.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(process)
        local = []
        assert process.stdout is not None
        for _ in args[1:]:
            line = process.stdout.readline()
            assert line.startswith("forwarding 127.0.0.1:"), (line, process.stderr and process.stderr.read())
            local.append(int(line.split()[1].rpartition(":")[2]))
        return process, local

    yield start
    for process in started:
        process.terminate()
        process.wait(10)


def test_cli_ports_share_and_port_forward(on_engine: OnEngine, engine_api: httpx.Client, name: str,
                                          port_forward: Any) -> None:
    daemon, api = on_engine.daemon, engine_api
    workspace = serving_workspace(api, name, cpus=1)  # on Swarm, each connection's relay runs in the workspace too
    listed = daemon.cli("ws", "ports", name)
    assert listed.returncode == 0 and "9000" in listed.stdout, listed.stderr
    assert f"/api/v1/workspaces/{workspace['id']}/ports/8080/proxy/" in listed.stdout, listed.stdout
    shared = daemon.cli("ws", "ports", "share", name, "9000", "--level", "authenticated")
    assert shared.returncode == 0 and shared.stdout.strip() == f"port 9000 of {name}: authenticated"
    shown = daemon.cli("ws", "show", name)
    assert "8080 (private), 9000 (authenticated)" in shown.stdout, shown.stdout + shown.stderr
    refused = daemon.cli("ws", "ports", "share", name, "9000", "--level", "world")
    assert refused.returncode == 2 and "level" in refused.stderr

    process, (echo_port, web_port) = port_forward(daemon, name, "0:9000", "0:8080")

    def round_trip(index: int) -> bytes:
        with socket.create_connection(("127.0.0.1", echo_port), timeout=30) as conn:
            payload = f"connection {index}\n".encode() * 1000
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
            return received == payload and b"ok" or received[:100]

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(round_trip, range(20)))
    if results != [b"ok"] * 20:
        process.terminate()
        print(process.communicate(timeout=10)[1], daemon.log()[-5000:])
    assert results == [b"ok"] * 20
    answer = httpx.get(f"http://127.0.0.1:{web_port}/index.html", timeout=30)
    assert answer.status_code == 200 and PAGE in answer.text

    process.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = process.communicate(timeout=30)
    assert (process.returncode, stderr) == (130, "")


def test_cli_port_forward_ends_on_an_unknown_workspace(daemon: Daemon, name: str) -> None:
    process = subprocess.Popen([sys.executable, "-m", "vmhost", "ws", "port-forward", name, "0:9000"],
                               env=daemon.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    local = int(process.stdout.readline().split()[1].rpartition(":")[2])
    with socket.create_connection(("127.0.0.1", local), timeout=30) as conn:
        assert conn.recv(10) == b""
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 3 and f"no workspace {name!r}" in stderr


def proxy(ref: str, port: int, path: str = "") -> str:
    return f"/api/v1/workspaces/{ref}/ports/{port}/proxy/{path}"


def preview_entries(client: httpx.Client, ref: str) -> list[tuple[str | None, str | None, int]]:
    """(user, phase, status) of the audit entries of requests through the workspace's previews."""
    entries = all_items(client, "/api/v1/audit", workspace=ref)
    return [(e["user"], e["phase"], e["status"]) for e in entries if "/proxy/" in e["path"]]


def test_preview_forwards_requests_to_whom_may_reach_the_port(daemon: Daemon, api: httpx.Client, name: str) -> None:
    alice = daemon.token(f"alice-{name}")
    with daemon.tcp(token=alice) as as_alice, daemon.tcp(token=daemon.token(f"bob-{name}")) as as_bob, \
            daemon.tcp(token=daemon.token(f"alice-{name}", scope="read")) as as_reader, daemon.tcp() as nobody:
        ws_id = serving_workspace(as_alice, name)["id"]
        page = as_alice.get(proxy(name, 8080, "index.html"))
        assert (page.status_code, page.text) == (200, PAGE + "\n") and page.headers["content-type"] == "text/html"
        assert as_alice.get(proxy(name, 8080)).text == PAGE + "\n"  # the directory's index.html
        assert as_alice.head(proxy(name, 8080, "index.html")).headers["content-length"] == str(len(PAGE) + 1)

        echoed = as_alice.post(proxy(name, 8080, "cgi-bin/echo?a=1&b=x%20y"), content=b"the body",
                               headers={"X-Custom": "kept", "Cookie": "vmhost_preview=x; app=1",
                                        "X-Forwarded-For": "6.6.6.6", "Connection": "keep-alive, X-Drop",
                                        "X-Drop": "hop"})
        assert echoed.status_code == 200 and echoed.headers["x-echo"] == "yes", echoed.text
        seen = dict(line.split("=", 1) for line in echoed.text.split("BODY:")[0].splitlines() if "=" in line)
        host = daemon.url.split("//")[1]
        assert seen["REQUEST_METHOD"] == "POST" and seen["QUERY_STRING"] == "a=1&b=x%20y"
        apps_token = as_alice.get(proxy(name, 8080, "cgi-bin/echo?token=the-apps"))  # the app's, not vmhost's
        assert apps_token.status_code == 200 and "QUERY_STRING=token=the-apps" in apps_token.text
        assert echoed.text.endswith("BODY:\nthe body")
        assert seen["HTTP_X_CUSTOM"] == "kept" and seen["HTTP_COOKIE"] == "app=1"
        assert seen["HTTP_X_FORWARDED_FOR"] == "127.0.0.1" and seen["HTTP_X_FORWARDED_PROTO"] == "http"
        assert seen["HTTP_X_FORWARDED_HOST"] == host
        assert seen["HTTP_FORWARDED"] == f'for=127.0.0.1;host="{host}";proto=http'
        assert not {"HTTP_AUTHORIZATION", "HTTP_X_DROP"} & set(seen), seen
        # the owner's own app is not sandboxed (its policy passes as it is); the daemon's answers are
        assert echoed.headers.get_list("content-security-policy") == ["img-src data:"]
        assert "content-security-policy" not in page.headers

        # who may: a read token GETs only; another user nothing until the port is shared, by its id
        refused = nobody.get(proxy(ws_id, 8080, "index.html"))
        assert refused.status_code == 401 and refused.headers["content-security-policy"] == SANDBOX
        assert as_reader.get(proxy(name, 8080, "index.html")).status_code == 200
        refused = as_reader.post(proxy(name, 8080, "cgi-bin/echo"), content=b"x")
        assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
        assert as_bob.get(proxy(ws_id, 8080, "index.html")).status_code == 404
        shared = as_alice.put(f"/api/v1/workspaces/{name}/ports/8080/sharing", json={"level": "authenticated"})
        assert shared.status_code == 200
        assert as_bob.get(proxy(ws_id, 8080, "index.html")).text == PAGE + "\n"
        bobs = as_bob.post(proxy(ws_id, 8080, "cgi-bin/echo"), content=b"from bob")
        assert bobs.text.endswith("from bob")
        # to anyone but the owner, every answer is sandboxed (the app's own policy kept): alice's page
        # cannot reach bob's token on the daemon's origin
        assert bobs.headers.get_list("content-security-policy") == ["img-src data:", SANDBOX]
        not_there = as_bob.get(proxy(ws_id, 8080, "nothing-here"))
        assert not_there.status_code == 404 and not_there.headers.get_list("content-security-policy") == [SANDBOX]
        assert as_bob.get(proxy(ws_id, 9000)).status_code == 404  # only the shared port

        missing = as_alice.get(proxy(name, 9999))
        assert missing.status_code == 502 and "nothing answers on port 9999" in missing.json()["detail"]
        listed = as_alice.get(f"/api/v1/workspaces/{name}/ports")  # the daemon's own routes: no sandbox
        assert "content-security-policy" not in listed.headers

        # a browser: a cookie for the preview's path stands for alice there, and nowhere else
        session = as_alice.post(f"/api/v1/workspaces/{name}/ports/8080/preview-session")
        assert session.status_code == 200 and session.json() == {"url": proxy(ws_id, 8080)}, session.text
        set_cookie = session.headers["set-cookie"].lower()
        assert {f"path={proxy(ws_id, 8080)}", "httponly", "samesite=strict"} <= {
            part.strip() for part in set_cookie.split(";")}, set_cookie
        cookie = {"vmhost_preview": session.cookies["vmhost_preview"]}
        with daemon.tcp() as browser:
            browser.cookies.update(cookie)
            through = browser.post(proxy(ws_id, 8080, "cgi-bin/echo"), content=b"by cookie")
            assert through.status_code == 200 and through.text.endswith("by cookie")
            assert "vmhost_preview" not in through.text  # nor is it forwarded
            assert browser.get(proxy(ws_id, 9000)).status_code == 401  # another port
            assert browser.get(proxy(name, 8080)).status_code == 401  # the cookie names the workspace by id
            assert browser.get(f"/api/v1/workspaces/{ws_id}").status_code == 401  # and nothing else

    # one audit entry per preview session, not per request (the refusals are recorded as ever)
    recorded = preview_entries(api, ws_id) + preview_entries(api, name)
    assert recorded.count((f"alice-{name}", "start", 200)) == 1, recorded
    assert (f"bob-{name}", "start", 200) in recorded and (None, None, 401) in recorded
    assert (f"alice-{name}", None, 403) in recorded


def test_preview_streams_a_large_download_and_each_user_has_a_limit(make_daemon: Any, name: str) -> None:
    daemon = make_daemon({"VMHOST_USER_MAX_PREVIEW_REQUESTS": "2", "VMHOST_PREVIEW_IDLE_TIMEOUT": "2"})
    with daemon.client() as root, daemon.tcp(token=daemon.token("dora")) as as_dora:
        serving_workspace(root, name)
        other = serving_workspace(as_dora, f"{name}-d")
        made = root.post(f"/api/v1/workspaces/{name}/commands", json={"argv": ["sh", "-c", (
            "dd if=/dev/zero of=/workspace/big bs=1M count=50 2>/dev/null; "
            "(sleep 600 | nc -l -p 9200) </dev/null >/dev/null 2>&1 &")], "stream": True})  # accepts, never answers
        assert made.status_code == 200 and '"exit_code": 0' in made.text, made.text

        status = f"/proc/{daemon.process.pid}/status"

        def peak_mb() -> float:  # the daemon's peak resident memory so far
            return next(int(line.split()[1]) for line in open(status) if line.startswith("VmHWM")) / 1024

        before = peak_mb()
        started = time.monotonic()
        received = 0
        with root.stream("GET", proxy(name, 8080, "big")) as download:
            assert download.headers["content-length"] == str(50 * 1024 * 1024)
            for chunk in download.iter_raw():
                received += len(chunk)
        seconds = time.monotonic() - started
        grown = peak_mb() - before
        print(f"50 MB through the preview in {seconds:.2f} s ({50 / seconds:.0f} MB/s); "
              f"the daemon's peak memory grew {grown:.1f} MB")
        assert received == 50 * 1024 * 1024 and grown < 20

        # two downloads in progress (read by nobody) are root's limit; dora is unaffected
        with root.stream("GET", proxy(name, 8080, "big")), root.stream("GET", proxy(name, 8080, "big")):
            refused = root.get(proxy(name, 8080, "index.html"))
            assert refused.status_code == 429 and refused.headers["retry-after"] == "5"
            assert "too many preview requests at once" in refused.json()["detail"]
            assert as_dora.get(proxy(other["id"], 8080, "index.html")).text == PAGE + "\n"
        deadline = time.monotonic() + 10  # the daemon notices the downloads' clients have gone
        while (again := root.get(proxy(name, 8080, "index.html"))).status_code == 429:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert again.status_code == 200

        deadline = time.monotonic() + 20
        while 9200 not in {p["port"] for p in ports(root, name) if p["listening"]}:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        silent = root.get(proxy(name, 9200))
        assert silent.status_code == 504 and "did not answer within 2 s" in silent.json()["detail"]


# answers a WebSocket upgrade by hand: records the request's head in /workspace/ws-request, answers 101
# with the Sec-WebSocket-Accept the key asks for (and the first subprotocol asked for), sends the text
# frame "hello", then records the frames that arrive in /workspace/ws-frames
WS_SERVER = r"""cat > /workspace/ws.sh <<'EOF'
#!/bin/sh
while IFS= read -r line; do
  line=${line%?}
  echo "$line" >> /workspace/ws-request
  [ -z "$line" ] && break
  case "$line" in
    [Ss]ec-[Ww]eb[Ss]ocket-[Kk]ey:*) key=${line#*: };;
    [Ss]ec-[Ww]eb[Ss]ocket-[Pp]rotocol:*) protocol=${line#*: }; protocol=${protocol%%,*};;
  esac
done
accept=$(printf %s "${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11" | sha1sum | cut -c1-40 | xxd -r -p | base64)
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
printf 'Sec-WebSocket-Accept: %s\r\n' "$accept"
[ -n "$protocol" ] && printf 'Sec-WebSocket-Protocol: %s\r\n' "$protocol"
printf '\r\n\201\005hello'
cat >> /workspace/ws-frames
EOF
chmod +x /workspace/ws.sh; nc -ll -p 9100 -e /workspace/ws.sh </dev/null >/dev/null 2>&1 &"""


def workspace_file(client: httpx.Client, ref: str, path: str) -> bytes:
    response = client.get(f"/api/v1/workspaces/{ref}/files", params={"path": path})
    return response.content if response.status_code == 200 else b""


def first_frame_text(frames: bytes) -> str:
    """The payload of the first frame a client sent (short, masked: as RFC 6455 says a client sends)."""
    length, mask = frames[1] & 0x7F, frames[2:6]
    return bytes(b ^ mask[i % 4] for i, b in enumerate(frames[6:6 + length])).decode()


def preview_socket(client: httpx.Client, ref: str, port: int, path: str, **kwargs: Any) -> Any:
    return connect_ws(proxy(ref, port, path), client, **kwargs)


def preview_socket_refusal(client: httpx.Client, ref: str, port: int) -> tuple[int, str]:
    with preview_socket(client, ref, port, "") as ws:
        _, code, reason = receive_until_closed(ws)
    return code, reason


def test_preview_passes_websocket_upgrades(make_daemon: Any, name: str) -> None:
    daemon = make_daemon({"VMHOST_PREVIEW_DOMAIN": "preview.test", "VMHOST_PREVIEW_IDLE_TIMEOUT": "2"})
    with daemon.tcp(token=daemon.token(f"alice-{name}")) as as_alice, \
            daemon.tcp(token=daemon.token(f"bob-{name}")) as as_bob, \
            daemon.tcp(token=daemon.token(f"alice-{name}", scope="read")) as as_reader, daemon.tcp() as nobody:
        ws_id = serving_workspace(as_alice, name)["id"]
        started = as_alice.post(f"/api/v1/workspaces/{name}/commands",
                                json={"argv": ["sh", "-c", WS_SERVER], "stream": True})
        assert started.status_code == 200 and '"exit_code": 0' in started.text, started.text
        deadline = time.monotonic() + 20
        while 9100 not in {p["port"] for p in ports(as_alice, name) if p["listening"]}:
            assert time.monotonic() < deadline
            time.sleep(0.1)

        with preview_socket(as_alice, name, 9100, "live/a%20b?x=1&token=the-apps", subprotocols=["chat", "v2"],
                            headers={"X-Custom": "kept", "Cookie": "vmhost_preview=x; app=1",
                                     "X-VM-Email": "alice@example.com"}) as ws:
            assert ws.subprotocol == "chat"
            assert ws.receive_text(timeout=20) == "hello"
            ws.send_text("ping")
        deadline = time.monotonic() + 20
        while len(frames := workspace_file(as_alice, name, "/workspace/ws-frames")) < 10:
            assert time.monotonic() < deadline, frames
            time.sleep(0.1)
        assert first_frame_text(frames) == "ping"

        request = workspace_file(as_alice, name, "/workspace/ws-request").decode().splitlines()
        assert request[0] == "GET /live/a%20b?x=1&token=the-apps HTTP/1.1"
        head = {k.lower(): v for k, _, v in (line.partition(": ") for line in request[1:] if line)}
        assert head["x-custom"] == "kept" and head["cookie"] == "app=1" and head["upgrade"] == "websocket"
        assert head["sec-websocket-protocol"] == "chat, v2" and head["x-forwarded-for"] == "127.0.0.1"
        assert head["user-agent"].startswith("python-httpx")  # the client's, not the daemon's library's
        assert not {"authorization", "x-vm-email"} & set(head), head

        # who may: as for the preview, but a WebSocket (like a tunnel) needs a write scope
        assert preview_socket_refusal(nobody, ws_id, 9100)[0] == 4401
        assert preview_socket_refusal(as_bob, ws_id, 9100)[0] == 4404
        assert preview_socket_refusal(as_reader, name, 9100) == (
            4403, "this token is read-only: it may not open a WebSocket through a preview")
        assert preview_socket_refusal(as_alice, name, 9999)[0] == 4502
        assert as_alice.put(f"/api/v1/workspaces/{name}/ports/9100/sharing",
                            json={"level": "authenticated"}).status_code == 200
        with preview_socket(as_bob, ws_id, 9100, "") as ws:
            assert ws.receive_text(timeout=20) == "hello"
            _, code, reason = receive_until_closed(ws)  # then nothing moves
            assert (code, reason) == (4408, "no traffic for 2 s")

        # on the port's own host name, a browser's cookie from the preview's link
        own = f"9100--{name}--alice-{name}.preview.test:{daemon.port}"
        link = as_alice.post(f"/api/v1/workspaces/{name}/ports/9100/preview-session").json()["url"]
        opened = nobody.get(link.split(own, 1)[1], headers={"Host": own})
        assert opened.status_code == 303, opened.text
        cookie = f"vmhost_preview={opened.cookies['vmhost_preview']}"
        with connect_ws("/on-its-host", nobody, headers={"Host": own, "Cookie": cookie}) as ws:
            assert ws.receive_text(timeout=20) == "hello"
        deadline = time.monotonic() + 20
        while "GET /on-its-host HTTP/1.1" not in workspace_file(as_alice, name, "/workspace/ws-request").decode():
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_preview_on_its_own_host_name(make_daemon: Any, name: str) -> None:
    daemon = make_daemon({"VMHOST_PREVIEW_DOMAIN": "Preview.Test", "VMHOST_TRUSTED_PROXIES": "127.0.0.1"})
    alice = f"alice-{name}"
    own = f"8080--{name}--{alice}.preview.test:{daemon.port}"

    def on(host: str, **headers: str) -> dict[str, str]:
        return {"Host": host, **headers}

    with daemon.tcp(token=daemon.token(alice)) as as_alice, daemon.tcp(token=daemon.token(f"bob-{name}")) as as_bob, \
            daemon.tcp() as nobody, daemon.client() as root:
        ws_id = serving_workspace(as_alice, name)["id"]
        listed = {p["port"]: p["preview_url"] for p in ports(as_alice, name)}
        assert listed[8080] == f"http://{own}/"
        behind_tls = as_alice.get(f"/api/v1/workspaces/{name}/ports",  # as a trusted proxy addressed it
                                  headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "vmhost.example"})
        assert behind_tls.json()["items"][0]["preview_url"] == f"https://8080--{name}--{alice}.preview.test/"

        page = as_alice.get("/index.html", headers=on(own))
        assert (page.status_code, page.text) == (200, PAGE + "\n")
        assert "content-security-policy" not in page.headers  # its own origin: no sandbox
        assert (alice, "start", 200) in preview_entries(root, ws_id)  # the audit log names the workspace
        assert as_alice.get("/", headers=on(own)).text == PAGE + "\n"
        echoed = as_alice.get("/cgi-bin/echo?q=1", headers=on(own)).text
        assert "QUERY_STRING=q=1" in echoed and f"HTTP_X_FORWARDED_HOST={own}" in echoed
        # the daemon's own routes are not there: the path is the app's
        theirs = as_alice.get("/api/v1/workspaces", headers=on(own))
        assert theirs.status_code == 404 and "404 Not Found" in theirs.text and "items" not in theirs.text

        assert nobody.get("/", headers=on(own)).status_code == 401
        assert as_bob.get("/", headers=on(own)).status_code == 404
        for missing in (f"8080--nope--{alice}", f"8080--{name}--nobody", "8080--x", "no-port", "8080--a.b--c"):
            refused = as_alice.get("/", headers=on(f"{missing}.preview.test"))
            assert refused.status_code == 404 and refused.json()["code"] == "workspace_not_found", missing
        assert as_alice.get("/api/v1/workspaces", headers=on("preview.test")).status_code == 200  # not a preview

        # a browser: the session's link, once, sets a cookie for this host only
        link = as_alice.post(f"/api/v1/workspaces/{name}/ports/8080/preview-session").json()["url"]
        assert link.startswith(f"http://{own}/.vmhost/preview-session?ticket=")
        opened = nobody.get(link.split(own, 1)[1], headers=on(own))
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        set_cookie = {part.strip().lower() for part in opened.headers["set-cookie"].split(";")}
        assert {"path=/", "httponly", "samesite=lax"} <= set_cookie and not any(
            part.startswith("domain") for part in set_cookie), set_cookie
        cookie = f"vmhost_preview={opened.cookies['vmhost_preview']}"
        assert nobody.get("/index.html", headers=on(own, Cookie=cookie)).text == PAGE + "\n"
        assert nobody.get("/", headers=on(own.replace("8080", "9000", 1), Cookie=cookie)).status_code == 401
        again = nobody.get(link.split(own, 1)[1], headers=on(own))
        assert again.status_code == 401 and "has been used" in again.json()["detail"]
        elsewhere = nobody.get(link.split(own, 1)[1], headers=on(own.replace("8080", "9000", 1)))
        assert elsewhere.status_code == 401
        # behind a TLS-terminating proxy (trusted here), the link is https and the cookie Secure
        tls = {"X-Forwarded-Proto": "https"}
        link = as_alice.post(f"/api/v1/workspaces/{name}/ports/8080/preview-session", headers=tls).json()["url"]
        assert link.startswith(f"https://{own}/.vmhost/preview-session?ticket=")
        opened = nobody.get(link.split(own, 1)[1], headers=on(own, **tls))
        assert opened.status_code == 303, opened.text
        assert "secure" in {part.strip().lower() for part in opened.headers["set-cookie"].split(";")}
