"""Shell completion: completions/ holds what `scripts/gen-completions` writes, the stored scripts
complete the CLI's current commands in real bash, zsh and fish, workspace names come from the daemon,
and the fast path that answers those names says what Typer would, without importing Typer."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import REPO, Daemon, create_ws
from test_cli import imported_modules

from vmhost.cli.completion import CONNECTION_OPTIONS, GROUPS, NAME_COMMANDS

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


def name_commands_of_the_cli() -> dict[tuple[str, ...], frozenset[str]]:
    """Where the command tree completes a workspace name (complete_workspace_names is the only
    argument completion): each command whose first argument has one, with its options that take a value."""
    from vmhost.cli.app import cli

    found = {}

    def walk(command: Any, path: tuple[str, ...]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
            return
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        if arguments and vars(arguments[0]).get("_custom_shell_complete") is not None:
            found[path] = frozenset(opt for p in command.params if p.param_type_name == "option" and not p.is_flag
                                    for opt in p.opts)

    walk(cli(), ())
    return found


def test_the_fast_path_knows_where_the_cli_completes_workspace_names() -> None:
    from vmhost.cli.app import cli

    found = name_commands_of_the_cli()
    for group in GROUPS:
        assert {path[1:]: options for path, options in found.items() if path[0] == group} == NAME_COMMANDS
    assert {path[0] for path in found} == set(GROUPS)
    root_options = {opt for p in cli().params if p.param_type_name == "option" and not p.is_flag for opt in p.opts}
    assert root_options == set(CONNECTION_OPTIONS)


LINES = ["vmhost ws show {name}", "vmhost workspaces stop {name}-a", "vmhost ws show --json {name}-b",
         "vmhost ws snapshot restore --as-new x {name}", "vmhost ws logs -n 5 {name}", "vmhost ws exec {name} ",
         "vmhost ws start --timeout ", "vmhost ws show -", "vmhost ws sh", "vmhost ", "vmhost ws show nothing-{name}",
         "vmhost --socket {socket} ws rm {name}-al", "vmhost --url http://127.0.0.1:9 ws rm {name}"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish-get-args", "fish-is-args"])
def test_the_fast_path_answers_what_typer_answers(daemon: Daemon, api: httpx.Client, name: str, shell: str) -> None:
    """`vmhost` (the fast path first) and Typer alone, each as a process, on the same lines."""
    create_ws(api, f"{name}-alpha", wait=False)
    create_ws(api, f"{name}-beta", wait=False)
    shell, _, fish_action = shell.partition("-")
    typer_alone = [sys.executable, "-c", "from vmhost.cli.app import cli; cli()(prog_name='vmhost')"]
    for line in LINES:
        line = line.format(name=name, socket=daemon.socket)
        env = daemon.cli_env({"_VMHOST_COMPLETE": f"complete_{shell}", "_TYPER_COMPLETE_ARGS": line,
                              "_TYPER_COMPLETE_FISH_ACTION": fish_action, "COMP_WORDS": line,
                              "COMP_CWORD": str(len(line.split()) - (0 if line.endswith(" ") else 1))})
        fast, typer = (subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
                       for argv in ([f"{VENV_BIN}/vmhost"], typer_alone))
        assert (fast.returncode, fast.stdout, fast.stderr) == (typer.returncode, typer.stdout, typer.stderr), line


def test_completing_a_workspace_name_imports_neither_typer_nor_rich_nor_httpx(daemon: Daemon, api: httpx.Client,
                                                                              name: str) -> None:
    create_ws(api, name, wait=False)
    env = daemon.cli_env({"_VMHOST_COMPLETE": "complete_bash", "COMP_WORDS": f"vmhost ws show {name[:3]}",
                          "COMP_CWORD": "3"})
    imported = {module.split(".")[0] for module in imported_modules(env=env)}
    assert not {"typer", "rich", "httpx", "click", "pydantic"} & imported, sorted(imported)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Any]:
    """A tmux server of the test's own (its socket in tmp_path), so the shells in it get exactly the
    environment given."""
    server = str(tmp_path / "tmux.sock")

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-S", server, *args], capture_output=True, text=True, check=True).stdout

    yield tmux
    subprocess.run(["tmux", "-S", server, "kill-server"], capture_output=True, check=False)


def wait_screen(tmux: Any, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        screen = tmux("capture-pane", "-p", "-t", "main")
        if needle in screen:
            return screen
        assert time.monotonic() < deadline, f"never saw {needle!r} on screen:\n{screen}"
        time.sleep(0.1)


# How each shell is started with no user configuration, and how it loads vmhost's completion the
# way an installed copy is found: bash sources the file; zsh's compinit reads `#compdef` from each
# file in $fpath; fish loads `vmhost.fish` from $fish_complete_path at the first Tab on `vmhost`.
SHELLS = {
    "bash": (["bash", "--norc", "--noprofile"], f"source {COMPLETIONS / 'vmhost.bash'}"),
    "zsh": (["zsh", "-f"], f"fpath=({COMPLETIONS} $fpath); autoload -Uz compinit; compinit -u -D"),
    "fish": (["fish", "--no-config", "--private"], f"set -p fish_complete_path {COMPLETIONS}"),
}


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_tab_completes_commands_and_workspace_names_in_each_real_shell(daemon: Daemon, api: httpx.Client,
                                                                      name: str, shell: str, terminal: Any) -> None:
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed (scripts/test installs it)")
    create_ws(api, f"{name}-alpha", wait=False)
    create_ws(api, f"{name}-beta", wait=False)
    argv, load = SHELLS[shell]
    env = {"PATH": f"{VENV_BIN}:{os.environ['PATH']}", "VMHOST_SOCKET": str(daemon.socket), "TERM": "screen",
           **{k: os.environ[k] for k in ("HOME", "PYTHONPATH") if k in os.environ}}
    command = shlex.join(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv])
    terminal("new-session", "-d", "-s", "main", "-x", "150", "-y", "40", command)
    terminal("send-keys", "-t", "main", f'{load}; echo LOAD""ED', "Enter")
    wait_screen(terminal, "LOADED")
    terminal("send-keys", "-t", "main", "vmhost ws sho", "Tab")
    wait_screen(terminal, "vmhost ws show")  # with a space after it, which the pane does not show
    terminal("send-keys", "-t", "main", f"{name}-a", "Tab")
    wait_screen(terminal, f"vmhost ws show {name}-alpha")
