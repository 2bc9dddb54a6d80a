"""Who gets in and what they reach. Endpoints are taken from the daemon's own OpenAPI spec (and its
WebSocket routes from the routers), so an endpoint added later is covered without editing this file."""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
import re
import sqlite3
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import Daemon, all_items, create_ws, wait_op, workspace_ids
from httpx_ws import WebSocketDisconnect, connect_ws

import vmhost.daemon.routes

READS = {"get", "head", "options"}
NASTY = ["../../etc/passwd", "..%2f..%2fetc", "a;id", "$(id)", "`id`", "a b", "x\nX-VM-User: root", "\x00", "-rf",
         "' OR '1'='1", "ws_" + "f" * 12, "a" * 300]


def spec_operations(client: httpx.Client) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(method, path template, operation, whole spec) for every HTTP endpoint in the spec."""
    spec = client.get("/openapi.json").json()
    return [(method, path, operation, spec) for path, item in spec["paths"].items()
            for method, operation in item.items() if method in {"get", "post", "put", "patch", "delete"}]


def websocket_paths() -> list[str]:
    paths = []
    for module in pkgutil.iter_modules(vmhost.daemon.routes.__path__):
        router = getattr(importlib.import_module(f"vmhost.daemon.routes.{module.name}"), "router", None)
        paths += [r.path for r in getattr(router, "routes", []) if type(r).__name__.endswith("WebSocketRoute")]
    return paths


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in schema:
        return _resolve(next(s for s in schema["anyOf"] if s.get("type") != "null"), spec)
    return schema


def example(schema: dict[str, Any], spec: dict[str, Any]) -> Any:
    """The smallest valid value of a schema (required fields only)."""
    schema = _resolve(schema, spec)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: example(sub, spec) for name, sub in schema.get("properties", {}).items()
                if name in schema.get("required", [])}
    if kind == "array":
        return [example(schema.get("items", {}), spec) for _ in range(schema.get("minItems", 0))]
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    return "x"


def body_for(operation: dict[str, Any], spec: dict[str, Any]) -> Any:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    return None if content is None else example(content["schema"], spec)


def fill(path: str, operation: dict[str, Any], spec: dict[str, Any], values: dict[str, str]) -> str:
    """The path with each parameter set: from `values` by name, else the smallest valid value."""
    for param in operation.get("parameters", []):
        if param["in"] == "path":
            value = values.get(param["name"]) or str(example(param.get("schema", {}), spec))
            path = path.replace("{" + param["name"] + "}", quote(value, safe=""))
    return path


def query_for(operation: dict[str, Any], spec: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Every required query parameter (from `values` by name, else the smallest valid value); `timeout` 0
    so that waiting endpoints answer at once."""
    query = {"timeout": 0} if any(p["name"] == "timeout" for p in operation.get("parameters", [])) else {}
    for param in operation.get("parameters", []):
        if param["in"] == "query" and param.get("required"):
            query[param["name"]] = values.get(param["name"]) or example(param.get("schema", {}), spec)
    return query


SAMPLES = {"path": "/workspace", "action": "stop"}


def is_workspace_param(name: str) -> bool:
    return name == "ref" or "workspace" in name


@pytest.fixture
def victim(daemon: Daemon, name: str) -> dict[str, Any]:
    """bob's workspace (running), his token and one of his operations."""
    bob = daemon.token("bob")
    with daemon.tcp(bob) as as_bob:
        workspace = create_ws(as_bob, name)["workspace"]
        token_id = as_bob.get("/api/v1/tokens").json()["items"][0]["id"]
    return {"workspace": workspace, "token": bob, "token_id": token_id,
            "operation_id": workspace["current_operation_id"] or daemon.client().get(
                "/api/v1/operations", params={"workspace_id": workspace["id"]}).json()["items"][0]["id"]}


def test_another_users_workspace_is_404_on_every_endpoint(daemon: Daemon, victim: dict[str, Any]) -> None:
    workspace = victim["workspace"]
    checked = 0
    with daemon.tcp(daemon.token("mallory")) as mallory:
        for method, template, operation, spec in spec_operations(mallory):
            params = operation.get("parameters", [])
            targets = {p["name"] for p in params if p["in"] == "path"}
            for ref in (workspace["id"], workspace["name"]):
                values = {**SAMPLES, "operation_id": victim["operation_id"], "token_id": victim["token_id"],
                          **{n: ref for n in targets if is_workspace_param(n)}}
                if not targets & {"operation_id", "token_id"} and not any(is_workspace_param(n) for n in targets):
                    continue
                response = mallory.request(method, fill(template, operation, spec, values),
                                           json=body_for(operation, spec), params=query_for(operation, spec, values))
                assert response.status_code == 404, (method, template, response.text)
                checked += 1
            for query in (p["name"] for p in params if p["in"] == "query" and is_workspace_param(p["name"])):
                if method not in READS:
                    continue
                response = mallory.request(method, fill(template, operation, spec, SAMPLES),
                                           params={**query_for(operation, spec, SAMPLES), query: workspace["id"]})
                assert response.status_code in (200, 403, 404), (template, response.text)
                if response.status_code == 200:  # nothing of bob's in it
                    assert workspace["id"] not in response.text and "bob" not in response.text, template
        assert checked >= 8
        for path in websocket_paths():
            if "{" not in path:
                continue
            url = re.sub(r"\{[^}]+\}", workspace["id"], path.replace("{port}", "8080"))
            with connect_ws(url, mallory) as ws, pytest.raises(WebSocketDisconnect) as refused:
                ws.receive_text(timeout=10)
            assert refused.value.code == 4404, path
    with daemon.tcp(victim["token"]) as bob:
        mine = bob.get(f"/api/v1/workspaces/{workspace['id']}").json()
        assert mine["status"] == "running" and mine["updated_at"] == workspace["updated_at"]


def test_a_read_token_gets_403_on_every_mutation(daemon: Daemon, api: httpx.Client, name: str) -> None:
    workspace = create_ws(api, name)["workspace"]
    reader = daemon.token("root", scope="read")
    before = all_items(api, "/api/v1/tokens")
    refused = []
    with daemon.tcp(reader) as tcp:
        assert tcp.get("/api/v1/workspaces").status_code == 200
        for method, template, operation, spec in spec_operations(tcp):
            if method in READS:
                continue
            values = {**SAMPLES, "ref": name, "user": "root"}
            response = tcp.request(method, fill(template, operation, spec, values),
                                   json=body_for(operation, spec), params=query_for(operation, spec, values))
            assert response.status_code == 403, (method, template, response.text)
            assert "read-only" in response.json()["detail"]
            refused.append(template)
    assert "/api/v1/workspaces" in refused and "/api/v1/tokens" in refused
    assert api.get(f"/api/v1/workspaces/{workspace['id']}").json() == workspace
    assert all_items(api, "/api/v1/tokens") == before


def test_core_refuses_read_only_callers_without_http(tmp_path) -> None:
    from vmhost.core.models import Caller, Scope
    from vmhost.core.orchestrator import Orchestrator, WorkspaceRequest
    from vmhost.core.store import Store
    from vmhost.core.templates import TemplateCatalog
    from vmhost.errors import Forbidden

    orchestrator = Orchestrator(Store(tmp_path / "db"), engine=None, templates=TemplateCatalog(None))
    reader = Caller(user="cron", scope=Scope.READ)
    for attempt in (lambda: orchestrator.create(reader, WorkspaceRequest(name="x")),
                    lambda: orchestrator.delete(reader, "x"), lambda: orchestrator.create_token(reader),
                    lambda: orchestrator.quotas.set(Caller(user="root", admin=True, scope=Scope.READ), "a", {})):
        with pytest.raises(Forbidden):
            attempt()
    orchestrator.close()


def test_spoofed_proxy_header_is_401_unless_the_peer_is_a_trusted_proxy(daemon: Daemon, make_daemon,
                                                                      name: str) -> None:
    with daemon.tcp(headers={"X-VM-User": "root"}) as spoofer:
        assert spoofer.post("/api/v1/workspaces", json={"name": name}).status_code == 401
        assert spoofer.get("/api/v1/me").status_code == 401
    proxied = make_daemon({"VMHOST_TRUSTED_PROXIES": "127.0.0.1"})
    with proxied.tcp(headers={"X-VM-User": "root"}) as proxy:  # the host's admin: never through the proxy
        assert proxy.get("/api/v1/me").status_code == 401
    with proxied.tcp(headers={"X-VM-User": "admin"}) as proxy:
        me = proxy.get("/api/v1/me").json()
        assert (me["user"], me["door"], me["role"]) == ("admin", "proxy", "user")  # a name, not an admin's powers
        assert proxy.get("/api/v1/audit").status_code == 403
    with proxied.tcp(headers={"X-VM-User": "bad name"}) as proxy:
        assert proxy.get("/api/v1/me").status_code == 401


def test_revoked_and_expired_tokens_are_401(daemon: Daemon, api: httpx.Client) -> None:
    created = api.post("/api/v1/tokens", json={"user": "henry"}).json()
    short = api.post("/api/v1/tokens", json={"user": "henry", "ttl_seconds": 1}).json()
    with daemon.tcp(created["secret"]) as tcp:
        assert tcp.get("/api/v1/me").status_code == 200
        api.delete(f"/api/v1/tokens/{created['token']['id']}")
        revoked = tcp.get("/api/v1/me")
        assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    time.sleep(1.2)
    with daemon.tcp(short["secret"]) as tcp:
        expired = tcp.get("/api/v1/me")
        assert expired.status_code == 401 and "expired" in expired.json()["detail"]


def test_tokens_are_stored_only_as_hashes(daemon: Daemon, api: httpx.Client) -> None:
    created = api.post("/api/v1/tokens", json={"user": "ivy"}).json()
    with sqlite3.connect(f"file:{daemon.db_path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT * FROM tokens WHERE id = ?", (created["token"]["id"],)).fetchall()
        stored = " ".join(str(v) for v in rows[0])
        digest = db.execute("SELECT hash FROM tokens WHERE id = ?", (created["token"]["id"],)).fetchone()[0]
    assert created["secret"] not in stored
    assert digest == hashlib.sha256(created["secret"].encode()).hexdigest()


def test_users_manage_only_their_own_tokens(daemon: Daemon, api: httpx.Client) -> None:
    other = api.post("/api/v1/tokens", json={"user": "judy"}).json()["token"]["id"]
    with daemon.tcp(daemon.token("kim")) as kim:
        mine = kim.post("/api/v1/tokens", json={"name": "laptop", "scope": "read"})
        assert mine.status_code == 201 and mine.json()["token"]["user"] == "kim"
        assert kim.post("/api/v1/tokens", json={"user": "judy"}).status_code == 403
        assert kim.post("/api/v1/tokens", json={"admin": True}).status_code == 403
        assert kim.delete(f"/api/v1/tokens/{other}").status_code == 404
        assert kim.delete(f"/api/v1/tokens/{mine.json()['token']['id']}").json()["revoked_at"] is not None
        assert {t["user"] for t in kim.get("/api/v1/tokens").json()["items"]} == {"kim"}
    with daemon.tcp(daemon.token("lead", admin=True)) as lead:  # an admin token may make tokens for others
        assert lead.post("/api/v1/tokens", json={"user": "judy", "scope": "read"}).status_code == 201
        assert lead.get("/api/v1/me").json()["role"] == "admin"


BAD_CREATES = [
    {"name": "../../etc"}, {"name": "a;id"}, {"name": "$(id)"}, {"name": "a\nb"}, {"name": "x" * 64},
    {"name": "ok", "template": "../../../etc/passwd"},
    {"name": "ok", "labels": {"a\nb": "x"}}, {"name": "ok", "labels": {"team": "x\ny"}},
    {"name": "ok", "labels": {"../k": "v"}},
    {"name": "ok", "env": {"A=B": "x"}}, {"name": "ok", "env": {"PATH;id": "x"}}, {"name": "ok", "env": {"A": "\x00"}},
    {"name": "ok", "provision": [["sh", "-c", "id\x00"]]}, {"name": "ok", "provision": [[]]},
    {"name": "ok", "provision": [""]},
    {"name": "ok", "repo_url": "--upload-pack=touch /tmp/pwned"}, {"name": "ok", "repo_url": "ext::sh -c id"},
    {"name": "ok", "repo_url": "file:///etc"}, {"name": "ok", "repo_url": "https://h/r", "branch": "--exec=id"},
    {"name": "ok", "repo_url": "https://h/r", "branch": "../x"},
    {"name": "ok", "plugins": ["$(id)"]},
]


def test_injection_attempts_are_refused_and_change_nothing(daemon: Daemon, api: httpx.Client) -> None:
    with daemon.tcp(daemon.token("oscar")) as oscar:
        before = (all_items(api, "/api/v1/workspaces"), all_items(oscar, "/api/v1/tokens"))
        for body in BAD_CREATES:
            response = oscar.post("/api/v1/workspaces", json=body)
            assert response.status_code == 422, (body, response.text)
            assert response.json()["code"] == "invalid_input"
        for user in ("root\n", "a b", "../root", ""):
            assert oscar.post("/api/v1/tokens", json={"user": user}).status_code in (403, 422)
        # every path parameter of every endpoint, with hostile values: refused, never a 5xx
        for method, template, operation, spec in spec_operations(oscar):
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
            for value in NASTY if names else ():
                path = fill(template, operation, spec, {n: value for n in names})
                response = oscar.request(method, path, json=body_for(operation, spec),
                                         params=query_for(operation, spec, SAMPLES))
                assert response.status_code in (403, 404, 405, 422), (method, path, response.text)
        assert (all_items(api, "/api/v1/workspaces"), all_items(oscar, "/api/v1/tokens")) == before
    assert api.get("/health").json()["status"] == "ok"


def test_clone_from_the_servers_disk_is_for_admins_only(daemon: Daemon, api: httpx.Client, name: str) -> None:
    with daemon.tcp(daemon.token("paul")) as paul:
        response = paul.post("/api/v1/workspaces", json={"name": name, "repo_url": "file:///root"})
    assert response.status_code == 422 and "only admins" in response.json()["detail"]


def test_bad_bodies_leave_the_daemon_well(daemon: Daemon, api: httpx.Client, name: str) -> None:
    before = workspace_ids(api)
    for content in (b"{", b"[]", b"null", b'{"name": 1}', "{\"name\": \"\u00e9\"}".encode(), b"\xff\xfe"):
        response = api.post("/api/v1/workspaces", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 422, (content, response.text)
    assert workspace_ids(api) <= before
    assert api.get("/health").json()["status"] == "ok"
    wait_op(api, create_ws(api, name, wait=False)["operation"]["id"])


def test_cli_tokens_with_scope_and_expiry(daemon: Daemon) -> None:
    created = daemon.cli("tokens", "create", "--user", "quinn", "--scope", "read", "--expires", "30d", "--json")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)
    assert token["token"]["scope"] == "read" and token["token"]["expires_at"] is not None
    whoami = daemon.cli("--url", daemon.url, "--token", token["secret"], "whoami", "--json")
    assert json.loads(whoami.stdout)["scope"] == "read"
    refused = daemon.cli("--url", daemon.url, "--token", token["secret"], "ws", "create", "nope", "--no-wait")
    assert refused.returncode == 5 and "read-only" in refused.stderr
