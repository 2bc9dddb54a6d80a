"""A clone runs on the vmhost server: a non-admin cannot aim it at the server's own network, and its
error does not tell an open port from a closed one. No test here sends anything beyond loopback."""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from conftest import Daemon, create_ws, free_port, wait_op

from vmhost.core import clone as clone_module
from vmhost.core.clone import CloneRefused, is_public, pin, public_addresses
from vmhost.errors import ProviderError

PUBLIC = ["8.8.8.8", "1.1.1.1", "151.101.1.69", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]
NOT_PUBLIC = ["127.0.0.1", "127.1.2.3", "0.0.0.0", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254",
              "100.64.0.1", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1", "::1", "::",
              "fe80::1", "fc00::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::7f00:1",
              "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2001:0:4136:e378:8000:63bf:80ff:fffe"]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_loopback_private_and_hidden_ipv4_addresses_are_not(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("url", ["http://127.0.0.1/x", "https://localhost/x", "git://[::1]/x",
                                 "ssh://git@localhost/x", "git@localhost:x.git", "http://10.0.0.1:8080/x",
                                 "http://[::ffff:127.0.0.1]/x", "file:///etc"])
def test_urls_of_the_servers_network_are_refused(url: str) -> None:
    with pytest.raises(CloneRefused):
        pin(url)  # literal, loopback or unresolvable: nothing leaves this machine


def test_a_public_address_pins_git_to_it_without_redirects(monkeypatch: pytest.MonkeyPatch) -> None:
    assert pin("https://8.8.8.8:8443/r.git").config == ("http.followRedirects=false",)  # a literal: no lookup
    assert public_addresses("8.8.8.8", 443) == ["8.8.8.8"]
    assert pin("git://[2606:4700:4700::1111]/r").url == "git://[2606:4700:4700::1111]/r"
    ssh = dict(pin("ssh://git@1.1.1.1/r").env)["GIT_SSH_COMMAND"]
    assert "HostName=1.1.1.1" in ssh
    assert all(option in ssh for option in ("-F /dev/null", "PubkeyAuthentication=no", "IdentityAgent=none"))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", 443, 0, 0))])
    assert pin("https://example.com/r").config == (
        "http.followRedirects=false",
        "http.curloptResolve=example.com:443:93.184.215.14,[2606:2800:21f:cb07:6820:80da:af6b:8b2c]")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.1", 443))])
    with pytest.raises(CloneRefused):  # one private address is one too many
        pin("https://example.com/r")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port on loopback that is open, to see whether anything connects to it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        server.setblocking(False)
        yield server


def clone_error(client: httpx.Client, name: str, url: str) -> str:
    accepted = create_ws(client, name, wait=False, repo_url=url)
    operation = wait_op(client, accepted["operation"]["id"])
    assert operation["status"] == "failed"
    assert client.get(f"/api/v1/workspaces/{name}").json()["status"] == "error"
    wait_op(client, client.delete(f"/api/v1/workspaces/{name}").json()["id"])  # within the user's quota
    return operation["error"].replace(url, "URL")


def test_a_non_admin_cannot_clone_from_the_servers_network(daemon: Daemon, name: str,
                                                           listener: socket.socket) -> None:
    open_port, closed_port = listener.getsockname()[1], free_port()
    urls = [f"http://127.0.0.1:{open_port}/x", f"http://127.0.0.1:{closed_port}/x", f"http://localhost:{open_port}/x",
            f"https://localhost:{closed_port}/x", f"git://127.0.0.1:{open_port}/x", f"ssh://git@localhost:{open_port}/x",
            "git@localhost:x.git"]
    with daemon.tcp(daemon.token("mallory")) as mallory:
        errors = {clone_error(mallory, f"{name}-{i}", url) for i, url in enumerate(urls)}
        assert errors == {"cannot clone URL: it could not be reached, or the repository or branch does not exist "
                          "(without admin rights vmhost clones only from public network addresses and follows "
                          "no redirects)"}
    with pytest.raises(BlockingIOError):
        listener.accept()  # refused before anything connected


def test_an_admin_still_clones_from_anywhere(api: httpx.Client, name: str, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    accepted = create_ws(api, name, wait=False, repo_url=f"http://127.0.0.1:{port}/x")
    listener.settimeout(60)
    connection, _ = listener.accept()  # git came
    connection.close()
    operation = wait_op(api, accepted["operation"]["id"])
    assert operation["status"] == "failed" and operation["params"] == {"clone_from": "anywhere"}
    assert operation["error"].startswith(f"cannot clone http://127.0.0.1:{port}/x: ")
    assert "public network" not in operation["error"]  # git's own words, for an admin


def test_git_goes_to_the_checked_address_and_follows_no_redirect(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    """localhost is pinned to 127.0.0.2, as if that were the public address it resolved to; the server
    there redirects to 127.0.0.3, which git must not visit. Loopback only."""
    asked: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server name)
            asked.append(f"{self.headers['Host']}{self.path}")
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.3:{elsewhere.getsockname()[1]}/x")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with socket.socket() as elsewhere, ThreadingHTTPServer(("127.0.0.2", 0), Redirect) as server:
        elsewhere.bind(("127.0.0.3", 0))
        elsewhere.listen(8)
        elsewhere.setblocking(False)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        monkeypatch.setattr(clone_module, "public_addresses", lambda host, port: ["127.0.0.2"])
        with pytest.raises(ProviderError, match="could not be reached"):
            clone_module.clone(f"http://localhost:{port}/x", None, str(tmp_path / "src"), anywhere=False)
        server.shutdown()
        with pytest.raises(BlockingIOError):
            elsewhere.accept()  # the redirect was not followed
    assert asked and asked[0].startswith(f"localhost:{port}/x/info/refs")
