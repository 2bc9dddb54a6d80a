"""vmhost ws edit / extend / exec, and vmhost ops cancel."""

import sys
from typing import Annotated, Any

import typer

from vmhost.cli.base import (
    JsonOpt,
    NameArg,
    fail,
    key_values,
    ops_app,
    run,
    workspaces_app,
)
from vmhost.cli.durations import parse_duration, seconds_or_never
from vmhost.errors import InvalidInput

NO_EXPIRY = ("none", "never")
NO_SCHEDULE = ("", "none", "never", "off")


def _show(workspace: dict[str, Any], json: bool) -> None:
    from vmhost.cli import render

    render.print_json(workspace) if json else render.workspace(workspace)


@workspaces_app.command("edit")
def ws_edit(
    name: NameArg,
    new_name: Annotated[str | None, typer.Option("--name", help="Rename the workspace.")] = None,
    ttl: Annotated[str | None, typer.Option(help="Expire this long from now, e.g. 8h; 'none' removes the "
                                                 "expiry.")] = None,
    label: Annotated[list[str], typer.Option(help="Set a label, key=value; repeatable.")] = [],
    unlabel: Annotated[list[str], typer.Option(help="Remove the label with this key; repeatable.")] = [],
    plugin: Annotated[list[str] | None, typer.Option(help="Replace the plugins with these; repeatable.")] = None,
    idle_timeout: Annotated[str | None, typer.Option(help="Stop it after this long without activity, e.g. 2h; "
                                                          "'none': never.")] = None,
    json: JsonOpt = False,
) -> None:
    """Change a workspace's name, expiry, labels, plugins or idle timeout (at once; the container is
    untouched)."""
    body: dict[str, Any] = {}
    if new_name is not None:
        body["name"] = new_name
    if ttl is not None:
        body["ttl_seconds"] = None if ttl.strip().lower() in NO_EXPIRY else int(parse_duration(ttl))
    if label:
        body["labels"] = key_values(label, "label")
    if unlabel:
        body["remove_labels"] = unlabel
    if plugin is not None:
        body["plugins"] = plugin
    if idle_timeout is not None:
        body["idle_timeout_seconds"] = seconds_or_never(idle_timeout)
    if not body:
        fail(InvalidInput("nothing to change: give --name, --ttl, --label, --unlabel, --plugin or --idle-timeout"))
    _show(run(lambda c: c.patch(f"/workspaces/{name}", body)), json)


@workspaces_app.command("schedule")
def ws_schedule(
    name: NameArg,
    start: Annotated[str | None, typer.Option(help='Start it at this time: "[DAYS] HH:MM [ZONE]", e.g. '
                                                   '"mon-fri 08:30 Europe/Berlin"; "none" clears it.')] = None,
    stop: Annotated[str | None, typer.Option(help='Stop it at this time, e.g. "19:00" (in the start\'s zone '
                                                  'unless one is given); "none" clears it.')] = None,
    json: JsonOpt = False,
) -> None:
    """Set or clear when a workspace starts and stops by itself; with neither option, show it. Days are
    mon..sun, ranges (mon-fri) or lists (mon,wed), every day when left out; zones are IANA names (UTC
    when left out). Times follow daylight-saving changes; a start or stop missed while the daemon was
    down is made up once."""
    body = {field: None if value.strip().lower() in NO_SCHEDULE else value
            for field, value in (("autostart", start), ("autostop", stop)) if value is not None}
    workspace = run(lambda c: c.patch(f"/workspaces/{name}", body) if body else c.get(f"/workspaces/{name}"))
    from vmhost.cli import render

    if json:
        render.print_json(workspace)
    else:
        render.details([("Autostart", render.scheduled(workspace, "autostart")),
                        ("Autostop", render.scheduled(workspace, "autostop"))])


@workspaces_app.command("extend")
def ws_extend(
    name: NameArg,
    duration: Annotated[str, typer.Argument(help="How much later it should expire, e.g. 2h, 1d.")],
    json: JsonOpt = False,
) -> None:
    """Push a workspace's expiry further out (never earlier)."""
    seconds = int(parse_duration(duration))
    workspace = run(lambda c: c.post(f"/workspaces/{name}/extend", {"seconds": seconds}))
    from vmhost.cli import render

    if json:
        render.print_json(workspace)
    elif workspace["expires_at"] is None:
        render.out().print(f"{workspace['name']} has no expiry: it stays until deleted")
    else:
        render.out().print(f"{workspace['name']} now expires {render.relative(workspace['expires_at'])} "
                           f"({workspace['expires_at']})")


@workspaces_app.command("exec")
def ws_exec(
    name: NameArg,
    command: Annotated[list[str], typer.Argument(help="The program and its arguments, after --.")],
    env: Annotated[list[str], typer.Option(help="KEY=VALUE; repeatable.")] = [],
    workdir: Annotated[str | None, typer.Option(
        help="Directory to run in (default: the workspace's: its devcontainer.json's workspaceFolder, else "
             "/workspace).")] = None,
    timeout: Annotated[str, typer.Option(help="Kill it after this long, e.g. 30s, 2h.")] = "10m",
    stdin: Annotated[bool, typer.Option("--stdin", help="Send this command's standard input to it.")] = False,
) -> None:
    """Run a command in a workspace, showing its output live; exits with its exit code. Put -- before
    the command when it has options of its own: vmhost ws exec NAME -- ls -l."""
    body = {"argv": command, "env": key_values(env, "env"), "workdir": workdir, "stream": True,
            "timeout_seconds": parse_duration(timeout),
            "stdin": sys.stdin.buffer.read().decode("utf-8", errors="replace") if stdin else None}
    outputs = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}

    def stream(client: Any) -> dict[str, Any]:
        for item in client.post_lines(f"/workspaces/{name}/commands", body):
            if "exit_code" in item:
                return item
            target = outputs[item["stream"]]
            target.write(item["data"].encode())
            target.flush()
        return {"exit_code": 255, "error": "the daemon ended the answer before the command's end"}

    end = run(stream)
    if end.get("timed_out"):
        from vmhost.cli import render

        render.error_line(f"the command ran longer than {timeout} and was killed")
    elif end.get("error") and end["exit_code"] not in (126, 127):  # those were already told on stderr
        from vmhost.cli import render

        render.error_line(end["error"])
    raise typer.Exit(end["exit_code"])


@ops_app.command("cancel")
def ops_cancel(operation_id: str, json: JsonOpt = False) -> None:
    """Cancel a pending operation, kill the command of a running exec, or stop a running create's or
    rebuild's provisioning."""
    operation = run(lambda c: c.delete(f"/operations/{operation_id}"))
    from vmhost.cli import render

    if json:
        render.print_json(operation)
    else:
        render.out().print(f"operation {operation['id']} ({operation['type']}): {render.status(operation['status'])}"
                           f"{' - ' + operation['error'] if operation['error'] else ''}")
