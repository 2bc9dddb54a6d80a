"""The CLI as a user runs it: a real process talking HTTP to a real daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import docker
import httpx
from conftest import Daemon, create_ws


def test_create_ls_show_stop_start_rm_through_the_cli(daemon: Daemon, docker_client: docker.DockerClient,
                                                     name: str) -> None:
    created = daemon.cli("ws", "create", name, "--template", "web", "--label", "team=cli", "--ttl", "2h")
    assert created.returncode == 0, created.stderr
    assert "running" in created.stdout and name in created.stdout
    assert "hello from provisioning" in created.stderr  # provisioning output shown live

    listed = daemon.cli("workspaces", "ls")
    assert listed.returncode == 0
    row = next(line for line in listed.stdout.splitlines() if line.startswith(name))
    assert "running" in row and "team=cli" in row and "in 1h" in row and "->8080/tcp" in row

    shown = json.loads(daemon.cli("ws", "show", name, "--json").stdout)
    assert shown["status"] == "running"
    assert docker_client.containers.get(shown["connection"]["container_id"]).status == "running"

    stopped = daemon.cli("ws", "stop", name)
    assert stopped.returncode == 0 and "succeeded" in stopped.stdout
    assert docker_client.containers.get(shown["connection"]["container_id"]).status == "exited"
    assert json.loads(daemon.cli("ws", "ls", "--status", "stopped", "--json").stdout)[-1]["name"] == name

    queued = daemon.cli("ws", "start", name, "--no-wait", "--json")
    operation = json.loads(queued.stdout)
    waited = daemon.cli("ops", "wait", operation["id"], "--json")
    assert json.loads(waited.stdout)["status"] == "succeeded"

    ops = daemon.cli("ops", "ls", "--workspace", name)
    assert "create" in ops.stdout and "stop" in ops.stdout and "start" in ops.stdout

    removed = daemon.cli("ws", "rm", name)
    assert removed.returncode == 0, removed.stderr
    missing = daemon.cli("ws", "show", name)
    assert missing.returncode == 3
    assert missing.stderr.strip().startswith("Error:") and len(missing.stderr.strip().splitlines()) == 1


def test_errors_are_one_line_and_a_nonzero_exit(daemon: Daemon, name: str) -> None:
    bad = daemon.cli("ws", "create", "Bad_Name")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "'Bad_Name': use 1-63 lower-case letters" in bad.stderr
    unknown = daemon.cli("ws", "create", name, "--template", "nope")
    assert unknown.returncode == 2 and "unknown template" in unknown.stderr
    duration = daemon.cli("ws", "create", name, "--ttl", "soon")
    assert duration.returncode == 2 and "invalid duration" in duration.stderr
    failed = daemon.cli("ws", "create", name, "--provision", "exit 4")
    assert failed.returncode == 8 and "exited with 4" in failed.stderr
    daemon.cli("ws", "rm", name)


def test_cli_says_how_to_start_a_daemon_that_is_not_running(tmp_path) -> None:
    env = {**os.environ, "VMHOST_SOCKET": str(tmp_path / "none.sock")}
    result = subprocess.run([sys.executable, "-m", "vmhost", "ws", "ls"], env=env, capture_output=True, text=True)
    assert result.returncode == 6
    assert "vmhost daemon" in result.stderr and "cannot reach" in result.stderr


def test_tokens_create_prints_only_the_secret_on_stdout_and_works_over_tcp(daemon: Daemon, name: str) -> None:
    created = daemon.cli("tokens", "create", "--user", "gina")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("vmh_") and "\n" not in token
    over_tcp = daemon.cli("--url", daemon.url, "--token", token, "ws", "create", name, "--json")
    assert over_tcp.returncode == 0, over_tcp.stderr
    assert json.loads(over_tcp.stdout)["owner"] == "gina"
    listing = daemon.cli("tokens", "ls")
    assert "gina" in listing.stdout and token not in listing.stdout
    no_token = daemon.cli("--url", daemon.url, "ws", "ls")
    assert no_token.returncode == 5 and "Bearer" in no_token.stderr
    daemon.cli("--url", daemon.url, "--token", token, "ws", "rm", name)


def test_templates_ls_lists_builtin_and_directory_templates_and_broken_files(daemon: Daemon) -> None:
    result = daemon.cli("templates", "ls")
    assert result.returncode == 0
    for template in ("base", "web", "python", "nodejs"):
        assert template in result.stdout
    assert "broken.toml" in result.stderr


def test_config_show_prints_each_value_with_its_source(tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('janitor_interval = 42\ntrusted_proxies = ["10.0.0.1"]\n')
    env = {**os.environ, "VMHOST_CONFIG": str(config), "VM_API_BIND": "127.0.0.1:4000",
           "VMHOST_DB_PATH": str(tmp_path / "x.db")}
    env.pop("VMHOST_BIND", None)
    result = subprocess.run([sys.executable, "-m", "vmhost", "config", "show", "--json"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["bind"] == {"value": "127.0.0.1:4000", "source": "env VM_API_BIND"}
    assert shown["janitor_interval"] == {"value": "42.0", "source": f"file {config}"}
    assert shown["trusted_proxies"]["value"] == "10.0.0.1"
    assert shown["db_path"] == {"value": str(tmp_path / "x.db"), "source": "env VMHOST_DB_PATH"}
    assert shown["provisioner_interval"]["source"] == "default"

    config.write_text("janitor_intervall = 1\n")
    broken = subprocess.run([sys.executable, "-m", "vmhost", "config", "show"], env=env, capture_output=True,
                            text=True)
    assert broken.returncode == 2 and "unknown setting" in broken.stderr


def imported_modules(*args: str, env: dict[str, str] | None = None) -> set[str]:
    """Every module `vmhost ARGS` imports, by its full dotted name."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "vmhost", *args], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}


def test_cli_never_imports_the_server_side_and_starts_lean() -> None:
    imported = {module.split(".")[0] for module in imported_modules("--help")}
    for heavy in ("fastapi", "uvicorn", "docker", "sqlite_utils", "httpx", "starlette"):
        assert heavy not in imported, heavy


def test_listing_to_a_pipe_loads_neither_pydantic_nor_rich_rendering(daemon: Daemon, api: httpx.Client,
                                                                     name: str) -> None:
    """What keeps `vmhost ws ls` fast (bench/): Typer below 0.29, which does not run options through
    pydantic; rich's console only where styles are shown; the ws alias not built twice."""
    create_ws(api, name, wait=False)
    imported = imported_modules("ws", "ls", env=daemon.cli_env())
    assert "pydantic" not in imported and "rich.console" not in imported, sorted(imported)
    assert {"httpx", "typer"} <= imported


def test_user_text_that_looks_like_markup_is_shown_as_it_is(daemon: Daemon, api: httpx.Client, name: str) -> None:
    create_ws(api, name, wait=False, labels={"note": "[/x] [bold]not bold"})
    for args, env in ((("ws", "ls"), {}), (("ws", "ls"), {"FORCE_COLOR": "1"}), (("ws", "show", name), {})):
        shown = daemon.cli(*args, env=env)
        assert shown.returncode == 0, shown.stderr
        assert "note=[/x] [bold]not bold" in shown.stdout.replace("\x1b[0m", ""), shown.stdout
