"""Running commands in a workspace: streamed live, or as exec operations; timeouts kill every process. On
one engine and on a three-node Swarm (`on_engine`), where they run through the workspace's node."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from conftest import Daemon, OnEngine, create_ws, wait_op

MIB = 1024 * 1024


def run_streamed(api: httpx.Client, name: str, **body: Any) -> tuple[str, str, dict[str, Any]]:
    """POST a streamed command; (stdout, stderr, ending line)."""
    out: dict[str, str] = {"stdout": "", "stderr": ""}
    with api.stream("POST", f"/api/v1/workspaces/{name}/commands", json={"stream": True, **body}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    for line in lines[:-1]:
        out[line["stream"]] += line["data"]
    return out["stdout"], out["stderr"], lines[-1]


def container_processes(on_engine: OnEngine, workspace: dict[str, Any]) -> str:
    return on_engine.sh(workspace, "ps -o args")


def test_stream_sends_each_chunk_as_the_command_writes_it(on_engine: OnEngine, engine_api: httpx.Client,
                                                          name: str) -> None:
    workspace = create_ws(engine_api, name)["workspace"]
    container = on_engine.container(workspace)
    # the command cannot end before the test has seen its first line and answered by creating /tmp/go
    script = ("echo first; n=0; while [ ! -e /tmp/go ]; do n=$((n+1)); [ $n -gt 300 ] && echo gave up && exit 9; "
              "sleep 0.1; done; echo second >&2")
    seen = []
    with engine_api.stream("POST", f"/api/v1/workspaces/{name}/commands",
                    json={"argv": ["sh", "-c", script], "stream": True}) as response:
        for line in response.iter_lines():
            if not line:
                continue
            item = json.loads(line)
            seen.append(item)
            if item == {"stream": "stdout", "data": "first\n"}:
                assert container.exec_run(["touch", "/tmp/go"]).exit_code == 0
    assert seen == [{"stream": "stdout", "data": "first\n"}, {"stream": "stderr", "data": "second\n"},
                    {"exit_code": 0, "timed_out": False, "cancelled": False}]


def test_stream_passes_stdin_env_workdir_and_exit_code(engine_api: httpx.Client, name: str) -> None:
    create_ws(engine_api, name)
    stdout, stderr, end = run_streamed(engine_api, name,
                                       argv=["sh", "-c", "cat; echo $FOO; pwd; echo oops >&2; exit 3"],
                                       stdin="hello\n", env={"FOO": "bar"}, workdir="/tmp")
    assert stdout == "hello\nbar\n/tmp\n"
    assert stderr == "oops\n"
    assert end == {"exit_code": 3, "timed_out": False, "cancelled": False}

    # argv is never a shell line
    stdout, _, end = run_streamed(engine_api, name, argv=["echo", "$HOME; exit 5"])
    assert stdout == "$HOME; exit 5\n" and end["exit_code"] == 0


def test_timeout_kills_the_command_with_its_children(on_engine: OnEngine, engine_api: httpx.Client, name: str) -> None:
    # the script must say "started" within its 1 s: starting an exec costs CPU in the workspace's own cgroup,
    # more than a second of it at the Swarm tests' default of 0.05 CPUs when the machine is busy
    workspace = create_ws(engine_api, name, cpus=0.5)["workspace"]
    script = "sleep 301 & setsid sleep 302 & echo started; sleep 303"
    stdout, _, end = run_streamed(engine_api, name, argv=["sh", "-c", script], timeout_seconds=1)
    assert stdout == "started\n"
    assert end == {"exit_code": 137, "timed_out": True, "cancelled": False}
    assert "sleep 30" not in container_processes(on_engine, workspace)

    response = engine_api.post(f"/api/v1/workspaces/{name}/commands", json={"argv": ["sh", "-c", script],
                                                                     "timeout_seconds": 1})
    operation = wait_op(engine_api, response.json()["id"])
    assert operation["status"] == "failed"
    assert "longer than 1 s" in operation["error"] and "killed" in operation["error"]
    assert operation["result"]["exit_code"] == 137 and operation["result"]["timed_out"] is True
    assert operation["result"]["stdout"] == "started\n"
    assert "sleep 30" not in container_processes(on_engine, workspace)


def test_closing_the_stream_kills_the_command(on_engine: OnEngine, engine_api: httpx.Client, name: str) -> None:
    workspace = create_ws(engine_api, name)["workspace"]
    with engine_api.stream("POST", f"/api/v1/workspaces/{name}/commands",
                    json={"argv": ["sh", "-c", "echo started; sleep 304"], "stream": True}) as response:
        lines = response.iter_lines()
        assert json.loads(next(lines)) == {"stream": "stdout", "data": "started\n"}
        assert "sleep 304" in container_processes(on_engine, workspace)
    deadline = time.monotonic() + 30
    while "sleep 304" in container_processes(on_engine, workspace):
        assert time.monotonic() < deadline, "the command outlived its caller"
        time.sleep(0.1)


def test_missing_program_is_127_with_a_clear_message(engine_api: httpx.Client, name: str) -> None:
    create_ws(engine_api, name)
    stdout, stderr, end = run_streamed(engine_api, name, argv=["no-such-program", "x"])
    assert stdout == ""
    assert "command not found in the workspace: no-such-program" in stderr
    assert end["exit_code"] == 127 and end["error"] == "command not found in the workspace: no-such-program"

    _, _, end = run_streamed(engine_api, name, argv=["true"], workdir="/nowhere")
    assert end["exit_code"] == 126 and "/nowhere does not exist" in end["error"]

    response = engine_api.post(f"/api/v1/workspaces/{name}/commands", json={"argv": ["no-such-program"]})
    operation = wait_op(engine_api, response.json()["id"])
    assert operation["status"] == "failed"
    assert operation["error"] == "command not found in the workspace: no-such-program"
    assert operation["result"]["exit_code"] == 127


def test_operation_form_holds_output_and_does_not_block_lifecycle(engine_api: httpx.Client, name: str) -> None:
    create_ws(engine_api, name)
    response = engine_api.post(f"/api/v1/workspaces/{name}/commands",
                        json={"argv": ["sh", "-c", "echo out; echo err >&2; exit 4"]})
    assert response.status_code == 202
    assert response.json()["type"] == "exec"
    assert response.headers["location"] == f"/api/v1/operations/{response.json()['id']}"
    operation = wait_op(engine_api, response.json()["id"])
    assert operation["status"] == "succeeded"
    assert operation["result"] == {"exit_code": 4, "timed_out": False, "cancelled": False, "stdout": "out\n",
                                   "stderr": "err\n", "truncated": False}

    big = engine_api.post(f"/api/v1/workspaces/{name}/commands",
                   json={"argv": ["sh", "-c", "head -c 1100000 /dev/zero | tr '\\0' a"]}).json()
    result = wait_op(engine_api, big["id"])["result"]
    assert len(result["stdout"]) == MIB and result["truncated"] is True

    long = engine_api.post(f"/api/v1/workspaces/{name}/commands", json={"argv": ["sleep", "300"]}).json()
    stop = engine_api.post(f"/api/v1/workspaces/{name}/actions/stop")
    assert stop.status_code == 202, stop.text
    assert wait_op(engine_api, stop.json()["id"])["status"] == "succeeded"
    assert wait_op(engine_api, long["id"])["status"] in ("succeeded", "failed")


def test_cancel_a_running_exec_kills_it(on_engine: OnEngine, engine_api: httpx.Client, name: str) -> None:
    workspace = create_ws(engine_api, name)["workspace"]
    operation = engine_api.post(f"/api/v1/workspaces/{name}/commands", json={"argv": ["sh", "-c", "echo hi; sleep 300"]}
                         ).json()
    while engine_api.get(f"/api/v1/operations/{operation['id']}").json()["status"] == "pending":
        time.sleep(0.05)
    response = engine_api.delete(f"/api/v1/operations/{operation['id']}")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "failed" and cancelled["error"] == "cancelled by root"
    assert cancelled["result"]["cancelled"] is True and cancelled["result"]["exit_code"] == 137
    assert "sleep 300" not in container_processes(on_engine, workspace)

    again = engine_api.delete(f"/api/v1/operations/{operation['id']}")
    assert again.status_code == 409 and "already failed" in again.json()["detail"]


def test_bad_command_requests_are_4xx(api: httpx.Client, name: str) -> None:
    create_ws(api, name)
    url = f"/api/v1/workspaces/{name}/commands"
    for body, words in (({"argv": []}, "argv"), ({"argv": "echo hi"}, "argv"), ({"argv": [""]}, "argv"),
                        ({"argv": ["true"], "workdir": "tmp"}, "absolute path"),
                        ({"argv": ["true"], "timeout_seconds": 0}, "timeout_seconds"),
                        ({"argv": ["true"], "env": {"1BAD": "x"}}, "environment variable"),
                        ({"argv": ["true"], "shell": True}, "shell")):
        response = api.post(url, json=body)
        assert response.status_code == 422, (body, response.text)
        assert words in response.json()["detail"] and response.json()["code"] == "invalid_input"
    assert api.post("/api/v1/workspaces/nope-none/commands", json={"argv": ["true"]}).status_code == 404

    wait_op(api, api.post(f"/api/v1/workspaces/{name}/actions/stop").json()["id"])
    response = api.post(url, json={"argv": ["true"], "stream": True})
    assert response.status_code == 409
    assert "is stopped" in response.json()["detail"] and "vmhost ws start" in response.json()["detail"]


def test_cli_exec_streams_to_local_streams_and_exits_with_the_code(api: httpx.Client, daemon: Daemon,
                                                                  name: str) -> None:
    create_ws(api, name)
    done = daemon.cli("ws", "exec", name, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (done.returncode, done.stdout, done.stderr) == (7, "out\n", "err\n")

    done = daemon.cli("ws", "exec", name, "--stdin", "--env", "X=1", "--", "sh", "-c", "cat; echo $X", input="in\n")
    assert (done.returncode, done.stdout) == (0, "in\n1\n")

    done = daemon.cli("ws", "exec", name, "--", "no-such-program")
    assert done.returncode == 127
    assert "command not found in the workspace: no-such-program" in done.stderr

    done = daemon.cli("ws", "exec", name, "--timeout", "1s", "--", "sleep", "60")
    assert done.returncode == 137
    assert "ran longer than 1s and was killed" in done.stderr

    done = daemon.cli("ws", "exec", name, "--timeout", "soon", "--", "true")
    assert done.returncode == 2 and "invalid duration" in done.stderr
