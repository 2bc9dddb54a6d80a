"""Schedules through a real daemon: set with `vmhost ws schedule`, shown by `ws ls`, `ws show` and the API,
refused with a detail a person can act on, cleared. (tests/unit/test_schedules.py covers when they act, on
a clock of the test's own.)"""

from __future__ import annotations

import json

import httpx
from conftest import Daemon, create_ws


def test_a_schedule_is_set_shown_and_cleared(daemon: Daemon, api: httpx.Client, name: str) -> None:
    workspace = create_ws(api, name)["workspace"]
    set_ = daemon.cli("ws", "schedule", name, "--start", "mon-fri 08:30 Europe/Berlin", "--stop", "19:00")
    assert set_.returncode == 0, set_.stderr
    assert "mon-fri 08:30 Europe/Berlin, next in" in set_.stdout and "19:00 Europe/Berlin, next in" in set_.stdout

    shown = api.get(f"/api/v1/workspaces/{workspace['id']}").json()
    assert (shown["autostart"], shown["autostop"]) == ("mon-fri 08:30 Europe/Berlin", "19:00 Europe/Berlin")
    assert shown["next_autostart_at"] and shown["next_autostop_at"]
    listed = daemon.cli("ws", "ls")
    assert "SCHEDULE" in listed.stdout.splitlines()[0]
    row = next(line for line in listed.stdout.splitlines() if line.startswith(name + " "))
    assert "mon-fri 08:30 / 19:00 Europe/Berlin" in row
    details = daemon.cli("ws", "show", name)
    assert "Autostart" in details.stdout and "mon-fri 08:30 Europe/Berlin" in details.stdout

    refused = api.patch(f"/api/v1/workspaces/{workspace['id']}", json={"autostart": "mnday 08:30"})
    assert refused.status_code == 422
    assert refused.json()["detail"] == ('autostart: unknown day "mnday" in "mnday 08:30": use mon..sun, ranges like '
                                        "mon-fri or lists like mon,wed")
    bad_cli = daemon.cli("ws", "schedule", name, "--stop", "25:00")
    assert bad_cli.returncode == 2 and 'bad time "25:00"' in bad_cli.stderr

    cleared = daemon.cli("ws", "schedule", name, "--start", "none", "--json")
    assert cleared.returncode == 0, cleared.stderr
    after = json.loads(cleared.stdout)
    assert (after["autostart"], after["next_autostart_at"], after["autostop"]) == (None, None, "19:00 Europe/Berlin")
    api.patch(f"/api/v1/workspaces/{workspace['id']}", json={"autostop": None}).raise_for_status()
    assert "SCHEDULE" not in daemon.cli("ws", "ls").stdout.splitlines()[0]
    api.delete(f"/api/v1/workspaces/{workspace['id']}")
