"""The CLI as a user sees it, over a mock transport instead of a daemon: an error answer becomes one red
line and the exit code of its kind; a listing is a table of aligned columns."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from click.testing import CliRunner, Result

from vmhost.cli import render
from vmhost.cli.app import cli

Handler = Callable[[httpx.Request], httpx.Response]
RED_ERROR = "\x1b[31mError:\x1b[0m "


@pytest.fixture
def run_cli() -> Iterator[Callable[..., Result]]:
    """Run `vmhost ARGS` in-process against `handler`, on a terminal with colours (FORCE_COLOR)."""
    def run(handler: Handler, *args: str) -> Result:
        render.out.cache_clear()  # the consoles look at the environment when made
        render.err.cache_clear()
        return CliRunner().invoke(cli(), ["--url", "http://daemon.test", *args], obj=httpx.MockTransport(handler),
                                  env={"FORCE_COLOR": "1", "TERM": "xterm", "NO_COLOR": None, "COLUMNS": "200",
                                       "VMHOST_URL": None, "VMHOST_TOKEN": None, "VMHOST_SOCKET": None})

    yield run
    render.out.cache_clear()
    render.err.cache_clear()


def answer(status: int, body: object) -> Handler:
    return lambda request: httpx.Response(status, json=body)


def test_a_404_answer_is_one_red_line_and_exit_code_3(run_cli: Callable[..., Result]) -> None:
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.method} {request.url}")
        return httpx.Response(404, json={"detail": "no workspace 'nope'", "code": "workspace_not_found"})

    result = run_cli(handler, "ws", "show", "nope")
    assert asked == ["GET http://daemon.test/api/v1/workspaces/nope"]
    assert (result.exit_code, result.stdout, result.stderr) == (3, "", f"{RED_ERROR}no workspace 'nope'\n")


@pytest.mark.parametrize("status, body, exit_code, line", [
    (409, {"detail": "workspace 'box' is busy", "code": "operation_in_flight"}, 4, "workspace 'box' is busy"),
    (422, {"detail": "name must be a DNS label", "code": "invalid_input"}, 2, "name must be a DNS label"),
    (403, {"detail": "this token is read-only", "code": "forbidden"}, 5, "this token is read-only"),
    (503, {"detail": "Docker engine does not answer", "code": "docker_unavailable"}, 7,
     "Docker engine does not answer"),
    (500, {"detail": "something new", "code": "a_code_this_cli_does_not_know"}, 1, "something new"),
])
def test_each_kind_of_error_has_its_exit_code(status: int, body: dict[str, str], exit_code: int, line: str,
                                              run_cli: Callable[..., Result]) -> None:
    result = run_cli(answer(status, body), "ws", "stop", "box")
    assert (result.exit_code, result.stderr) == (exit_code, f"{RED_ERROR}{line}\n")


def test_an_answer_that_is_not_json_shows_its_text(run_cli: Callable[..., Result]) -> None:
    result = run_cli(lambda request: httpx.Response(502, text="upstream connect error\n"), "ws", "show", "box")
    assert (result.exit_code, result.stderr) == (1, f"{RED_ERROR}upstream connect error\n")


def test_a_daemon_that_cannot_be_reached_is_exit_code_6(run_cli: Callable[..., Result]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    result = run_cli(refuse, "ws", "show", "box")
    assert result.exit_code == 6
    assert result.stderr.startswith(f"{RED_ERROR}cannot reach the vmhost daemon at http://daemon.test "
                                    "(Connection refused); start it with 'vmhost daemon'")
    assert result.stderr.count("\n") == 1


def test_templates_are_listed_as_a_table_with_broken_files_warned_about(run_cli: Callable[..., Result]) -> None:
    template = {"command": ["sleep", "infinity"], "env": {}, "provision": [], "cpus": None, "memory_mb": None,
                "shell": None, "capabilities": []}
    listing = {"items": [
        {**template, "name": "base", "image": "debian:bookworm-slim", "description": "Debian 12 with a shell",
         "ports": [], "source": "builtin"},
        {**template, "name": "web", "image": "node:22", "description": "", "ports": ["3000", "8080"],
         "source": "/etc/vmhost/templates/web.toml"},
    ], "next_cursor": None, "broken": [{"source": "/etc/vmhost/templates/bad.toml", "error": "'image' is required"}]}

    result = run_cli(answer(200, listing), "templates", "ls")
    assert result.exit_code == 0, result.output
    header = "\x1b[1mNAME\x1b[0m  \x1b[1mIMAGE\x1b[0m                 \x1b[1mDESCRIPTION\x1b[0m             " \
             "\x1b[1mPORTS\x1b[0m       \x1b[1mSOURCE\x1b[0m"
    assert result.stdout.splitlines() == [
        header,
        "base  debian:bookworm-slim  Debian 12 with a shell  -           built-in",
        "web   node:22                                       3000, 8080  /etc/vmhost/templates/web.toml",
    ]
    assert result.stderr == ("\x1b[33mWarning:\x1b[0m template file /etc/vmhost/templates/bad.toml is broken: "
                             "'image' is required\n")


def test_ports_show_each_preview_as_a_url_to_open(run_cli: Callable[..., Result]) -> None:
    port = {"listening": True, "in_template": False, "label": None, "sharing": "private", "tunnel_url": "/ws/..."}
    listing = {"items": [
        {**port, "port": 3000, "preview_url": "/api/v1/workspaces/ws_1/ports/3000/proxy/", "label": "web"},
        {**port, "port": 8080, "preview_url": "https://8080--web--ann.preview.example/"},
    ], "next_cursor": None}
    result = run_cli(answer(200, listing), "ws", "ports", "web")
    assert result.exit_code == 0, result.output
    assert [line.split() for line in result.stdout.splitlines()[1:]] == [
        ["3000", "yes", "no", "private", "http://daemon.test/api/v1/workspaces/ws_1/ports/3000/proxy/", "web"],
        ["8080", "yes", "no", "private", "https://8080--web--ann.preview.example/"],
    ]
