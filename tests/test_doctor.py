"""vmhost doctor: one PASS/FAIL line per check with a hint, a non-zero exit when one fails."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import Daemon, core_settings


def lines(output: str) -> dict[str, str]:
    """'PASS name: detail' lines by check name."""
    found = {}
    for line in output.splitlines():
        verdict, _, rest = line.partition(" ")
        if verdict in ("PASS", "FAIL"):
            found[rest.partition(":")[0]] = verdict + " " + rest
    return found


def test_doctor_passes_and_fails_each_check_with_hints(daemon: Daemon, test_image: str) -> None:
    result = daemon.cli("doctor")
    assert result.returncode == 1, result.stdout + result.stderr  # the built-in python image is absent
    checks = lines(result.stdout)
    for name in ("docker", "database", "schema", "socket", "disk (database)", "orphans", "template base"):
        assert checks[name].startswith("PASS"), result.stdout
    assert checks["socket"] == f"PASS socket: {daemon.socket}: mode 0660, group root"
    assert "integrity_check ok" in checks["database"]
    assert f"image {test_image} is on this host" in checks["template base"]
    assert checks["template python"] == "FAIL template python: image python:3.12-slim is not on this host"
    assert "hint: docker pull python:3.12-slim" in result.stdout
    assert checks["template broken"].startswith("FAIL template broken:")


def test_doctor_exits_zero_when_every_check_passes(make_daemon: Callable[..., Daemon], test_image: str,
                                                    tmp_path: Path) -> None:
    for template in ("base", "python", "nodejs"):  # files named like the built-ins replace them
        (tmp_path / f"{template}.toml").write_text(f'image = "{test_image}"\n')
    daemon = make_daemon({"VMHOST_TEMPLATES_DIR": str(tmp_path)})
    result = daemon.cli("doctor", "--json")
    report = json.loads(result.stdout)
    assert [c for c in report["checks"] if not c["ok"]] == []
    assert {"docker", "database", "schema", "socket", "orphans", "template python"} <= \
        {c["name"] for c in report["checks"]}
    assert result.returncode == 0


def test_world_writable_socket_fails_with_a_hint(make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon()
    os.chmod(daemon.socket, 0o666)
    result = daemon.cli("doctor")
    assert result.returncode == 1
    socket_line = lines(result.stdout)["socket"]
    assert socket_line.startswith("FAIL socket:") and "mode 0666" in socket_line
    assert "every local user may connect" in socket_line
    assert "hint: set socket_group" in result.stdout


def test_doctor_without_a_daemon_says_so_and_fails(daemon: Daemon, tmp_path: Path) -> None:
    result = daemon.cli("doctor", env={"VMHOST_SOCKET": str(tmp_path / "none.sock")})
    assert result.returncode == 1
    checks = lines(result.stdout)
    assert checks["socket"].startswith("FAIL socket:")
    assert checks["daemon"].startswith("FAIL daemon: cannot reach the vmhost daemon")
    assert "hint: start it" in result.stdout


def test_doctor_endpoint_lists_checks_for_admins_only(api: httpx.Client, daemon: Daemon) -> None:
    checks = api.get("/api/v1/doctor").json()
    assert {"name", "ok", "detail", "hint"} == set(checks[0])
    failing = [c for c in checks if not c["ok"]]
    assert failing and all(c["hint"] for c in failing)
    with daemon.tcp(token=daemon.token("doctor-user")) as client:
        response = client.get("/api/v1/doctor")
    assert response.status_code == 403
    assert response.json() == {"detail": "only admins may run the doctor", "code": "forbidden"}


@pytest.mark.parametrize("problem", ["missing image", "docker down"])
def test_checks_that_cannot_run_fail_rather_than_crash(problem: str, templates_dir: Path, tmp_path: Path) -> None:
    from vmhost.core import doctor
    from vmhost.core.build import make_engine
    from vmhost.core.reconcile import Reconciler
    from vmhost.core.store import Store
    from vmhost.core.templates import TemplateCatalog

    store = Store(tmp_path / "vmhost.db")
    down = {"docker_host": "unix:///nonexistent/docker.sock"} if problem == "docker down" else {}
    engine = make_engine(core_settings(**down))
    checks = doctor.run_checks(store, TemplateCatalog(templates_dir), Reconciler(store, engine, {"x": "y"}))
    by_name = {c.name: c for c in checks}
    assert by_name["database"].ok and by_name["schema"].ok
    if problem == "docker down":
        assert not by_name["docker"].ok and "does not answer" in by_name["docker"].detail
        assert not by_name["orphans"].ok and by_name["orphans"].hint
    else:
        assert not by_name["template python"].ok
        assert by_name["template python"].hint == "docker pull python:3.12-slim"
