"""The SSH row: `ssh web.vmhost true` through `vmhost config-ssh`'s block (ssh-proxy over the Unix socket,
the daemon's SSH server, a process in the workspace) against `vmhost ws exec web -- true` in the same run,
each timed from the command's start to its end (for `true`, its first byte is its last)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from bench.cases import WAIT, create_running, delete_workspaces
from bench.environment import Bench
from bench.measure import Plan, Result, Target, paired
from vmhost.testing import DaemonProcess, free_port

NAME = "web"


def ssh_rows(bench: Bench, plan: Plan) -> list[Result]:
    """The row, on a daemon of its own with its SSH server on a free loopback port."""
    daemon = bench.daemon(env={"VMHOST_SSH_BIND": f"127.0.0.1:{free_port()}"})
    try:
        with daemon.client(timeout=WAIT + 30) as api:
            workspace = create_running(api, NAME)
            config = daemon.dir / "ssh_config"
            written = daemon.cli("config-ssh", "--file", str(config))
            if written.returncode != 0:
                raise RuntimeError(f"config-ssh failed: {written.stderr}")
            ssh = ["ssh", "-F", str(config), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                   "-o", "LogLevel=ERROR", f"{NAME}.vmhost", "true"]
            exec_ = [sys.executable, "-m", "vmhost", "ws", "exec", NAME, "--", "true"]
            over_ssh, over_exec = paired(plan, command(daemon, ssh), command(daemon, exec_))
            delete_workspaces(api, [workspace["id"]])
    finally:
        daemon.cleanup()
    return [Result("ssh web.vmhost true", "ms", over_ssh, over_exec, "vmhost ws exec web -- true",
                   Target(max_ratio=3.0),
                   note="config-ssh's ProxyCommand: a CLI start, a WebSocket, an SSH handshake, an exec")]


def command(daemon: DaemonProcess, argv: list[str]) -> Callable[[int], None]:
    env = {**os.environ, **daemon.cli_env()}

    def run(_: int) -> None:
        done = subprocess.run(argv, env=env, capture_output=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-300:]!r}")
    return run
