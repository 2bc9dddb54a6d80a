"""vmhost events: list events, or follow them live over a WebSocket (reconnecting from the last id)."""

import json
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vmhost.cli.base import JsonOpt, app, run
from vmhost.errors import DaemonUnreachable

if TYPE_CHECKING:
    from vmhost.cli.client import VmhostClient

RECONNECT_FOR = 60.0
"""Seconds a follow keeps trying to reconnect after the daemon goes away (e.g. restarts)."""


def describe(event: dict[str, Any]) -> str:
    """One line for people: id, time, type, owner/workspace and what happened."""
    payload = event["payload"]
    kind = event["type"]
    if kind == "workspace.status":
        what = f"{payload['previous']} -> {payload['status']}" + (f" ({payload['reason']})" if payload.get("reason")
                                                                   else "")
    elif kind == "workspace.created":
        what = f"from template {payload.get('template')}"
    elif kind == "workspace.expiring":
        what = f"{payload['stage']}: expires {payload['expires_at']}, then {payload['action']}"
    elif kind == "operation.status":
        what = f"{payload['type']} {payload['operation_id']} {payload['status']}" + (
            f": {payload['error']}" if payload.get("error") else "")
    elif kind == "operation.output":
        what = payload["data"].rstrip("\n")
    elif kind == "workspace.updated":
        what = "changed " + ", ".join(payload.get("fields", []))
    else:
        what = json.dumps(payload)
    where = f"{event['owner'] or '-'}/{payload.get('name') or payload.get('workspace_name') or event['workspace_id']}"
    return f"{event['id']:>7}  {event['time'][:19].replace('T', ' ')}  {kind:<18} {where}  {what}"


def _show(event: dict[str, Any], as_json: bool) -> None:
    sys.stdout.write((json.dumps(event) if as_json else describe(event)) + "\n")
    sys.stdout.flush()


def _follow(client: "VmhostClient", path: str, since: int | None, types: str | None, as_json: bool) -> None:
    from httpx_ws import WebSocketDisconnect, WebSocketNetworkError

    from vmhost.cli.render import err

    last = since
    down_since: float | None = None
    while True:
        detail = None  # the whole of a refusal too long for the close frame's reason
        try:
            with client.websocket(path, since=last, types=types) as ws:
                while True:
                    message = json.loads(ws.receive_text())
                    down_since = None
                    if message["type"] == "heartbeat":
                        last = message["last_id"]
                    elif message["type"] == "gap":
                        err().print(f"[yellow]Warning:[/yellow] {message['detail']} (older than the retention); "
                                    "they cannot be shown", markup=True)
                    elif message["type"] == "error":
                        detail = message["detail"]
                    else:
                        last = message["id"]
                        _show(message, as_json)
        except WebSocketDisconnect as exc:
            error = client.closed_error(exc.code, detail or exc.reason)
            if not isinstance(error, DaemonUnreachable):
                raise error from None
        except (WebSocketNetworkError, DaemonUnreachable):
            pass
        # the daemon went away: come back from the last id seen, so nothing is missed or repeated
        down_since = down_since or time.monotonic()
        if time.monotonic() - down_since > RECONNECT_FOR:
            raise DaemonUnreachable(f"lost the event stream from {client.where} and could not reconnect for "
                                    f"{RECONNECT_FOR:.0f} s")
        time.sleep(1)


@app.command("events")
def events(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming new events.")] = False,
    since: Annotated[int | None, typer.Option(help="Only events after this id (default: all kept; with "
                                                    "--follow, only new ones).")] = None,
    workspace: Annotated[str | None, typer.Option("--workspace", "-w", help="Only this workspace (name or id).")]
    = None,
    type: Annotated[list[str], typer.Option("--type", "-t", help="Only this type, or a family like "
                                                                "'workspace.*'; repeatable.")] = [],
    limit: Annotated[int, typer.Option(help="At most this many (without --follow).")] = 500,
    json_out: JsonOpt = False,
) -> None:
    """Workspace and operation events: status changes, operation steps, provisioning output, expiry
    warnings. With --follow, streams them live and resumes after a lost connection."""
    types = ",".join(type) or None

    def action(client: "VmhostClient") -> None:
        if follow:
            path = f"/ws/workspaces/{workspace}/events" if workspace else "/ws/events"
            _follow(client, path, since, types, json_out)
            return
        for page in client.pages("/events", limit, since=since or 0, types=types, workspace_id=workspace):
            if page["gap"]:
                from vmhost.cli.render import err

                err().print(f"[yellow]Warning:[/yellow] {page['gap']['detail']}", markup=True)
            for event in page["items"]:
                _show(event, json_out)

    try:
        run(action)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
