"""Hardening: body limit, containers without extra privileges, socket and directory modes, TLS on TCP,
and a daemon that will not serve plain HTTP to the network by accident."""

from __future__ import annotations

import ast
import grp
import ssl
import stat
import subprocess
from pathlib import Path

import docker
import httpx
import pytest
from conftest import REPO, create_ws, umask

from vmhost.config import Settings
from vmhost.core.engines import DEFAULT_CAPABILITIES
from vmhost.daemon.exposure import check_exposure


def test_a_body_over_the_limit_is_413_and_the_daemon_goes_on(make_daemon, name: str) -> None:
    process = make_daemon({"VMHOST_MAX_BODY_BYTES": "2000"})
    with process.client() as client:
        big = {"name": name, "labels": {f"k{n}": "v" * 100 for n in range(30)}}
        response = client.post("/api/v1/workspaces", json=big)
        assert response.status_code == 413
        assert response.json() == {"detail": "request body is larger than the limit of 2000 bytes",
                                   "code": "payload_too_large"}

        def chunks():  # no Content-Length: counted while it is read
            for _ in range(10):
                yield b" " * 500

        streamed = client.post("/api/v1/workspaces", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert client.get("/api/v1/workspaces").json()["items"] == []
        assert client.get("/health").json()["status"] == "ok"
        assert client.get("/api/v1/audit").json()["items"][0]["status"] == 413


def test_containers_get_no_extra_privileges(make_daemon, test_image: str, tmp_path: Path,
                                            docker_client: docker.DockerClient, name: str) -> None:
    (tmp_path / "base.toml").write_text(f'image = "{test_image}"\n')
    (tmp_path / "debug.toml").write_text(f'image = "{test_image}"\ncapabilities = ["SYS_PTRACE", "cap_net_raw"]\n')
    (tmp_path / "bad.toml").write_text(f'image = "{test_image}"\ncapabilities = ["ALL"]\n')
    process = make_daemon({"VMHOST_TEMPLATES_DIR": str(tmp_path)})
    with process.client() as client:
        plain = create_ws(client, name)["workspace"]
        debug = create_ws(client, f"{name}-debug", template="debug")["workspace"]
        broken = client.get("/api/v1/templates").json()["broken"]
        assert any("invalid capability 'ALL'" in b["error"] for b in broken)
    host = docker_client.api.inspect_container(plain["connection"]["container_id"])["HostConfig"]
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert sorted(host["CapAdd"]) == sorted(DEFAULT_CAPABILITIES)
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 1024 // 5  # the default per-user budget over the default 5 workspaces
    assert not host.get("Binds")
    assert [(m["Type"], m["Target"]) for m in host["Mounts"]] == [("volume", "/workspace")]
    debug_host = docker_client.api.inspect_container(debug["connection"]["container_id"])["HostConfig"]
    assert set(debug_host["CapAdd"]) == {*DEFAULT_CAPABILITIES, "SYS_PTRACE", "NET_RAW"}
    # root in the container can still do a developer's chores
    container = docker_client.containers.get(plain["connection"]["container_id"])
    chores = "touch /workspace/f && chown nobody /workspace/f && chmod 600 /workspace/f && mkdir -p /opt/t && echo ok"
    done = container.exec_run(["sh", "-c", chores])
    assert done.exit_code == 0 and done.output.strip() == b"ok"
    assert container.exec_run(["mknod", "/tmp/dev", "c", "1", "3"]).exit_code != 0  # but no MKNOD


def test_socket_and_its_new_directory_belong_to_the_socket_group(make_daemon) -> None:
    group = grp.getgrgid(1).gr_name  # "daemon" on Debian: any group but root's
    process = make_daemon(start=False)
    process.socket = process.dir / "run" / "vmhost" / "s.sock"
    process.env.update(VMHOST_SOCKET=str(process.socket), VMHOST_SOCKET_GROUP=group)
    process.start()
    directory = process.socket.parent
    assert stat.S_IMODE(directory.stat().st_mode) == 0o750 and directory.stat().st_gid == 1
    assert stat.S_IMODE(process.socket.stat().st_mode) == 0o660 and process.socket.stat().st_gid == 1
    with process.client() as client:
        assert client.get("/health").status_code == 200


def test_the_database_and_its_directory_are_the_daemons_alone_whatever_the_umask(make_daemon) -> None:
    process = make_daemon(start=False)
    state = process.dir / "state"
    db = state / "vmhost.db"
    process.env["VMHOST_DB_PATH"] = str(db)
    side_files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
    with umask(0o022):
        process.start()
        assert process.token("perm")  # a write, through the WAL
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert [stat.S_IMODE(f.stat().st_mode) for f in side_files] == [0o600] * 3

        # as an older vmhost left them: files narrowed, an open directory named in the log
        process.stop()
        state.chmod(0o755)
        for f in side_files:
            if f.exists():
                f.chmod(0o644)
        process.start()
    assert [stat.S_IMODE(f.stat().st_mode) for f in side_files if f.exists()] == [0o600] * 3
    assert f"the database directory {state} is open to other users; 'chmod o-rwx {state}'" in process.log()


def test_an_unknown_socket_group_is_a_clear_refusal(make_daemon) -> None:
    process = make_daemon({"VMHOST_SOCKET_GROUP": "no-such-group-vmhost"}, start=False)
    with pytest.raises(RuntimeError):
        process.start(timeout=15)
    assert "socket group 'no-such-group-vmhost' does not exist" in process.log()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=vmhost-test",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_tls_on_tcp_while_the_socket_stays_plain(make_daemon, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    process = make_daemon({"VMHOST_TLS_CERT": str(cert), "VMHOST_TLS_KEY": str(key)})
    secret = process.token("tina")
    verify = ssl.create_default_context(cafile=str(cert))
    with httpx.Client(base_url=f"https://127.0.0.1:{process.port}", verify=verify,
                      headers={"Authorization": f"Bearer {secret}"}) as tls:
        assert tls.get("/health").json()["status"] == "ok"
        assert tls.get("/api/v1/me").json()["user"] == "tina"
    # with the system's CAs (not ours) the certificate is not trusted; without TLS there is no answer
    with httpx.Client(base_url=f"https://127.0.0.1:{process.port}") as unverified, \
            pytest.raises(httpx.ConnectError):
        unverified.get("/health")
    with process.tcp() as plain, pytest.raises(httpx.HTTPError):
        plain.get("/health")
    with process.client() as socket_client:
        assert socket_client.get("/health").status_code == 200
    assert f"listening on https://127.0.0.1:{process.port}" in process.log()


def test_plain_http_on_a_public_address_is_refused_before_serving(make_daemon) -> None:
    process = make_daemon(start=False)
    process.env["VMHOST_BIND"] = f"0.0.0.0:{process.port}"
    with pytest.raises(RuntimeError):
        process.start(timeout=15)
    assert process.process.returncode != 0
    assert "refusing to serve plain HTTP on 0.0.0.0" in process.log()
    assert "VMHOST_ALLOW_INSECURE_TCP=1" in process.log()
    assert not process.socket.exists()  # refused before binding anything


def test_plain_http_on_a_public_address_when_forced(make_daemon) -> None:
    process = make_daemon(start=False)
    process.env.update(VMHOST_BIND=f"0.0.0.0:{process.port}", VMHOST_ALLOW_INSECURE_TCP="1")
    process.start()
    with process.tcp() as tcp:  # traffic to loopback only
        assert tcp.get("/health").status_code == 200


@pytest.mark.parametrize(("env", "hosts", "refused"), [
    ({}, ["0.0.0.0"], True),
    ({}, ["myhost.example"], True),
    ({}, ["127.0.0.1"], False),
    ({}, ["::1"], False),
    ({}, ["localhost"], False),
    ({"VMHOST_TLS_CERT": "/c.pem", "VMHOST_TLS_KEY": "/k.pem"}, ["0.0.0.0"], False),
    ({"VMHOST_TRUSTED_PROXIES": "10.0.0.1"}, ["0.0.0.0"], False),
    ({"VMHOST_ALLOW_INSECURE_TCP": "yes"}, ["::"], False),
])
def test_exposure_rules(env: dict[str, str], hosts: list[str], refused: bool, tmp_path: Path) -> None:
    settings = Settings.load(env={"VMHOST_CONFIG": str(tmp_path / "none.toml"), **env})
    if refused:
        with pytest.raises(SystemExit):
            check_exposure(settings, hosts)
    else:
        check_exposure(settings, hosts)


def test_no_shell_strings_are_built_on_the_server() -> None:
    """Host processes get argv lists: no shell=True, os.system or os.popen anywhere in vmhost/."""
    offenders = []
    for path in (REPO / "vmhost").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                if func in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput"):
                    offenders.append(f"{path}:{node.lineno} {func}")
                if not (func.startswith("subprocess.") or func.endswith("Popen")):
                    continue
                if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                       for k in node.keywords):
                    offenders.append(f"{path}:{node.lineno} {func}(shell=...)")
                if node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
                    offenders.append(f"{path}:{node.lineno} {func} with a string")
    assert offenders == []
