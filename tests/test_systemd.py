"""The systemd units are valid, and the daemon serves on sockets passed the way systemd passes them
(fds 3 and 4, LISTEN_FDS, LISTEN_PID), binding its own only when there are none for it."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import REPO, Daemon

UNITS = REPO / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (scripts/test "
                                                           "installs Debian's systemd package)")

# Runs as the daemon's process: moves the two sockets to fds 3 and 4, sets LISTEN_* for its own pid
# (as systemd does after fork), then becomes `vmhost daemon` (exec keeps the pid).
ACTIVATE = """
import fcntl, os, sys
unix_fd, tcp_fd = (fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3])
for target, fd in ((3, unix_fd), (4, tcp_fd)):
    os.dup2(fd, target)
    os.close(fd)
os.environ.update(LISTEN_FDS="2", LISTEN_PID=sys.argv[3] if len(sys.argv) > 3 else str(os.getpid()))
os.execv(sys.executable, [sys.executable, "-m", "vmhost", "daemon"])
"""


@needs_analyze
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # the units name the installed executable; point it at this checkout's so verify can find it
    vmhost = Path(sys.executable).with_name("vmhost")
    assert vmhost.exists(), vmhost
    for unit in ("vmhost.service", "vmhost.socket"):
        text = (UNITS / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/opt/vmhost/bin/vmhost", str(vmhost)))
    assert "ExecStart=/opt/vmhost/bin/vmhost daemon" in (UNITS / "vmhost.service").read_text()
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(tmp_path / "vmhost.socket"),
                           str(tmp_path / "vmhost.service")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "vmhost" not in done.stderr, done.stderr  # no warning about our units either


def test_units_say_what_the_issue_asks() -> None:
    service = (UNITS / "vmhost.service").read_text().splitlines()
    for line in ("User=vmhost", "SupplementaryGroups=docker", "Restart=on-failure", "NoNewPrivileges=yes",
                 "ProtectSystem=strict", "ReadWritePaths=/var/lib/vmhost", "ProtectHome=yes", "PrivateTmp=yes",
                 "Requires=vmhost.socket", "LimitNOFILE=65536"):
        assert line in service
    sockets = (UNITS / "vmhost.socket").read_text().splitlines()
    for line in ("ListenStream=/run/vmhost/vmhost.sock", "ListenStream=127.0.0.1:3121", "SocketMode=0660",
                 "SocketGroup=vmhost"):
        assert line in sockets


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed")
def test_sysusers_and_tmpfiles_create_the_user_group_and_directories(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(UNITS / "vmhost.sysusers.conf")], check=True,
                   capture_output=True)
    passwd = (tmp_path / "etc/passwd").read_text()
    groups = {line.split(":")[0]: line.split(":")[3] for line in (tmp_path / "etc/group").read_text().splitlines()}
    assert passwd.startswith("vmhost:x:") and ":/var/lib/vmhost:/usr/sbin/nologin" in passwd
    assert "vmhost" in groups and "vmhost" in groups["docker"].split(",")
    subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create", str(UNITS / "vmhost.tmpfiles.conf")],
                   check=True, capture_output=True)
    state = (tmp_path / "var/lib/vmhost").stat()
    assert stat.S_IMODE(state.st_mode) == 0o750
    assert (tmp_path / "etc/vmhost/templates").is_dir()


def listening_pair(path: Path) -> tuple[socket.socket, socket.socket]:
    """What vmhost.socket makes: the Unix socket (0660) and a loopback TCP port."""
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(path))
    os.chmod(path, 0o660)
    unix.listen(16)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    return unix, tcp


def activate(daemon: Daemon, unix: socket.socket, tcp: socket.socket, listen_pid: str | None = None) -> None:
    args = [sys.executable, "-c", ACTIVATE, str(unix.fileno()), str(tcp.fileno())]
    if listen_pid is not None:
        args.append(listen_pid)
    with open(daemon.log_path, "ab") as log:
        daemon.process = subprocess.Popen(args, env=daemon.env, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=daemon.dir, pass_fds=(unix.fileno(), tcp.fileno()),
                                          start_new_session=True)


def answers(client: Callable[[], httpx.Client], daemon: Daemon, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        assert daemon.process is not None and daemon.process.poll() is None, daemon.log()
        try:
            with client() as http:
                return http.get("/health").json()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer within {timeout} s:\n{daemon.log()}") from None
            time.sleep(0.1)


def test_daemon_serves_on_inherited_unix_and_tcp_sockets(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(start=False)
    passed_path = daemon.dir / "activated.sock"
    unix, tcp = listening_pair(passed_path)
    port = tcp.getsockname()[1]
    try:
        activate(daemon, unix, tcp)
    finally:
        unix.close()
        tcp.close()  # the daemon holds its own copies now

    over_unix = answers(lambda: httpx.Client(transport=httpx.HTTPTransport(uds=str(passed_path)),
                                             base_url="http://vmhost"), daemon)
    over_tcp = answers(lambda: httpx.Client(base_url=f"http://127.0.0.1:{port}"), daemon)
    assert over_unix["status"] == over_tcp["status"] == "ok"
    assert not daemon.socket.exists()  # it bound nothing of its own
    with httpx.Client(base_url=f"http://127.0.0.1:{daemon.port}") as own, pytest.raises(httpx.ConnectError):
        own.get("/health")
    # the caller is still known on the inherited Unix socket: root here, an admin
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(passed_path)), base_url="http://vmhost") as http:
        assert http.get("/api/v1/tokens").status_code == 200
    assert "using 2 socket(s) from systemd" in daemon.log()
    assert stat.S_IMODE(passed_path.stat().st_mode) == 0o660


def test_sockets_meant_for_another_process_are_left_alone(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(start=False)
    unix, tcp = listening_pair(daemon.dir / "other.sock")
    try:
        activate(daemon, unix, tcp, listen_pid="1")  # LISTEN_PID names someone else
        health = answers(daemon.client, daemon)  # so it binds its own socket and port
    finally:
        unix.close()
        tcp.close()
    assert health["status"] == "ok"
    with daemon.tcp() as http:
        assert http.get("/health").status_code == 200
    assert "from systemd" not in daemon.log()


PROBE = """
import json, os, socket, sys
from vmhost.daemon.serve import systemd_sockets
blocking = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
blocking.bind(("127.0.0.1", 0)); blocking.listen(1)
os.dup2(blocking.fileno(), 3)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="api")
[sock] = systemd_sockets()
print(json.dumps({"blocking": sock.getblocking(), "inheritable": sock.get_inheritable(),
                  "family": int(sock.family), "left": [k for k in os.environ if k.startswith("LISTEN_")]}))
"""


def test_inherited_sockets_are_non_blocking_close_on_exec_and_the_variables_are_cleared() -> None:
    import json

    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == {"blocking": False, "inheritable": False, "family": int(socket.AF_INET),
                                       "left": []}


def test_no_listen_pid_means_no_inherited_sockets() -> None:
    from vmhost.daemon.serve import systemd_sockets

    assert systemd_sockets({"LISTEN_FDS": "2"}) == []
    assert systemd_sockets({"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid() + 1)}) == []
    assert systemd_sockets({}) == []
