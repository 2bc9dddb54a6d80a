"""Shell completion: completions/ holds what `scripts/gen-completions` writes from the CLI, the stored
scripts complete the CLI's current commands, and workspace names come from the daemon."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import REPO, Daemon, create_ws

COMPLETIONS = REPO / "completions"
FILES = ("vmhost.bash", "_vmhost", "vmhost.fish")
VENV_BIN = str(Path(sys.executable).parent)


def test_stored_completions_match_what_the_cli_generates(tmp_path: Path) -> None:
    subprocess.run([str(REPO / "scripts/gen-completions"), str(tmp_path)], check=True, capture_output=True)
    for name in FILES:
        assert (tmp_path / name).read_text() == (COMPLETIONS / name).read_text(), \
            f"completions/{name} is out of date: run scripts/gen-completions"


def bash_complete(words: list[str], env: dict[str, str] | None = None) -> list[str]:
    """Tab at the end of `words`, through the stored bash script, as bash would run it."""
    script = (f"source {COMPLETIONS / 'vmhost.bash'}; COMP_WORDS=({' '.join(repr(w) for w in words)}); "
              f"COMP_CWORD={len(words) - 1}; _vmhost_completion vmhost; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    full_env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **(env or {})}
    full_env.pop("VMHOST_URL", None)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=full_env, timeout=60,
                          check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [line for line in done.stdout.splitlines() if line]


def cli_commands(*path: str) -> set[str]:
    from vmhost.cli.app import cli

    group = cli()
    for name in path:
        group = group.commands[name]
    return {name for name, command in group.commands.items() if not command.hidden}


def test_bash_script_completes_the_cli_commands_of_today() -> None:
    assert set(bash_complete(["vmhost", ""])) == cli_commands()
    assert set(bash_complete(["vmhost", "ws", ""])) == cli_commands("ws")
    assert set(bash_complete(["vmhost", "db", ""])) == {"backup", "restore"}
    assert "--fix" in bash_complete(["vmhost", "doctor", "--"])


def test_workspace_names_complete_from_the_daemon(daemon: Daemon, api: httpx.Client, name: str) -> None:
    create_ws(api, f"{name}-alpha", wait=False)
    create_ws(api, f"{name}-beta", wait=False)
    socket = {"VMHOST_SOCKET": str(daemon.socket)}
    for command in ("show", "stop", "rm"):
        assert bash_complete(["vmhost", "ws", command, name], socket) == [f"{name}-alpha", f"{name}-beta"]
    assert bash_complete(["vmhost", "workspaces", "show", f"{name}-b"], socket) == [f"{name}-beta"]
    # through a flag on the command line too
    assert bash_complete(["vmhost", "--socket", str(daemon.socket), "ws", "show", f"{name}-a"]) == [f"{name}-alpha"]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_protocols_give_names_too(daemon: Daemon, api: httpx.Client, name: str, shell: str) -> None:
    create_ws(api, name, wait=False)
    env = {**os.environ, "VMHOST_SOCKET": str(daemon.socket), "_VMHOST_COMPLETE": f"complete_{shell}",
           "_TYPER_COMPLETE_ARGS": f"vmhost ws show {name}", "_TYPER_COMPLETE_FISH_ACTION": "get-args"}
    done = subprocess.run([f"{VENV_BIN}/vmhost"], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert name in done.stdout


def test_completion_is_silent_when_the_daemon_does_not_answer(tmp_path: Path) -> None:
    assert bash_complete(["vmhost", "ws", "show", ""], {"VMHOST_SOCKET": str(tmp_path / "none.sock")}) == []
