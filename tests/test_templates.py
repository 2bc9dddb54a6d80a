"""Templates as a user sees them: one in full, and a broken template file reported with its error."""

from __future__ import annotations

import json

import httpx
from conftest import Daemon


def test_a_broken_template_file_is_reported_with_its_error(api: httpx.Client, daemon: Daemon) -> None:
    response = api.get("/api/v1/templates/broken")
    assert response.status_code == 404
    assert response.json()["code"] == "template_not_found"
    assert "broken.toml" in response.json()["detail"] and "Invalid value" in response.json()["detail"]
    listed = api.get("/api/v1/templates").json()
    assert [b["source"].rsplit("/", 1)[-1] for b in listed["broken"]] == ["broken.toml"]

    shown = daemon.cli("templates", "show", "broken")
    assert shown.returncode == 3
    assert shown.stderr.count("\n") == 1 and "broken.toml" in shown.stderr and "Invalid value" in shown.stderr
    warned = daemon.cli("templates", "ls")
    assert warned.returncode == 0 and "broken.toml is broken" in warned.stderr


def test_templates_show_prints_one_template_in_full(daemon: Daemon) -> None:
    shown = daemon.cli("templates", "show", "web")
    assert shown.returncode == 0, shown.stderr
    assert "vmhost-test-busybox" in shown.stdout and "8080" in shown.stdout
    assert "echo hello from provisioning" in shown.stdout and "GREETING=hi" in shown.stdout
    as_json = json.loads(daemon.cli("templates", "show", "web", "--json").stdout)
    assert as_json["ports"] == ["8080"] and as_json["name"] == "web"
    unknown = daemon.cli("templates", "show", "nope")
    assert unknown.returncode == 3 and "unknown template 'nope'" in unknown.stderr
