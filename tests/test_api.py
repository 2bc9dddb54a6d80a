"""The REST API's doors and its answers to bad input: who may call, and what each mistake gets."""

from __future__ import annotations

import stat

import httpx
import pytest
from conftest import Daemon, all_items, create_ws, wait_op, workspace_ids


def test_health_needs_no_auth_and_reports_docker_and_database(daemon: Daemon) -> None:
    with daemon.tcp() as tcp:
        body = tcp.get("/health").json()
    assert body["status"] == "ok"
    assert body["docker"]["ok"] and body["database"]["ok"]
    assert body["database"]["schema_version"] >= 2


def test_socket_is_0660_and_the_socket_caller_is_identified_by_uid(daemon: Daemon, api: httpx.Client,
                                                                   name: str) -> None:
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o660
    workspace = create_ws(api, name, wait=False)["workspace"]
    assert workspace["owner"] == "root"  # this test runs as root: the peer credentials say so
    wait_op(api, workspace["current_operation_id"])


def test_tcp_without_credentials_is_401_with_a_hint(daemon: Daemon) -> None:
    with daemon.tcp() as tcp:
        response = tcp.get("/api/v1/workspaces")
        assert response.status_code == 401
        assert "Bearer" in response.json()["detail"]
        assert tcp.get("/api/v1/workspaces", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert tcp.get("/api/v1/workspaces", headers={"Authorization": "Basic abc"}).status_code == 401


def test_proxy_headers_are_ignored_from_an_untrusted_peer(daemon: Daemon) -> None:
    with daemon.tcp(headers={"X-VM-User": "root"}) as tcp:
        response = tcp.get("/api/v1/workspaces")
    assert response.status_code == 401
    assert "trusted proxy" in response.json()["detail"]


def test_proxy_headers_are_believed_from_a_trusted_proxy(make_daemon, name: str) -> None:
    proxied = make_daemon({"VMHOST_TRUSTED_PROXIES": "127.0.0.1"})
    with proxied.tcp(headers={"X-VM-User": "carol", "X-VM-Email": "carol@example.invalid"}) as tcp:
        workspace = create_ws(tcp, name)["workspace"]
        assert workspace["owner"] == "carol"
    with proxied.tcp(headers={"X-VM-User": "dave"}) as other:
        assert other.get(f"/api/v1/workspaces/{name}").status_code == 404
        assert other.get("/api/v1/workspaces").json()["items"] == []


def test_tokens_identify_tcp_callers_who_see_only_their_own_workspaces(daemon: Daemon, api: httpx.Client,
                                                                        name: str) -> None:
    alice, bob = daemon.token("alice"), daemon.token("bob")
    with daemon.tcp(alice) as as_alice, daemon.tcp(bob) as as_bob:
        workspace = create_ws(as_alice, name)["workspace"]
        assert workspace["owner"] == "alice"
        assert as_bob.get(f"/api/v1/workspaces/{name}").status_code == 404
        assert as_bob.get(f"/api/v1/workspaces/{workspace['id']}").status_code == 404
        assert as_bob.post(f"/api/v1/workspaces/{workspace['id']}/stop").status_code == 404
        assert as_bob.delete(f"/api/v1/workspaces/{workspace['id']}").status_code == 404
        assert as_bob.get(f"/api/v1/operations/{workspace['current_operation_id'] or 'x'}").status_code == 404
        assert name not in {w["name"] for w in as_bob.get("/api/v1/workspaces").json()["items"]}
        # bob may use the same name for his own
        assert create_ws(as_bob, name, wait=False)["workspace"]["owner"] == "bob"
    # the admin on the socket sees both
    owners = {w["owner"] for w in all_items(api, "/api/v1/workspaces") if w["name"] == name}
    assert owners == {"alice", "bob"}
    assert api.get(f"/api/v1/workspaces/{name}").status_code == 422  # ambiguous for an admin: use the id


def test_tokens_can_be_listed_without_secrets_and_revoked(daemon: Daemon, api: httpx.Client) -> None:
    created = api.post("/api/v1/tokens", json={"user": "erin", "name": "laptop"})
    assert created.status_code == 201
    secret, token_id = created.json()["secret"], created.json()["token"]["id"]
    listed = all_items(api, "/api/v1/tokens")
    assert token_id in {t["id"] for t in listed}
    assert secret not in created.text.replace(secret, "", 1)
    assert all("secret" not in t and "hash" not in t for t in listed)
    with daemon.tcp(secret) as tcp:
        assert tcp.get("/api/v1/workspaces").status_code == 200
        assert api.delete(f"/api/v1/tokens/{token_id}").json()["revoked_at"] is not None
        response = tcp.get("/api/v1/workspaces")
        assert response.status_code == 401 and "revoked" in response.json()["detail"]


def test_users_cannot_create_tokens_for_others(daemon: Daemon) -> None:
    with daemon.tcp(daemon.token("frank")) as tcp:
        assert tcp.post("/api/v1/tokens", json={}).status_code == 201
        response = tcp.post("/api/v1/tokens", json={"user": "root"})
        assert response.status_code == 403
        assert tcp.post("/api/v1/tokens", json={"admin": True}).status_code == 403


@pytest.mark.parametrize(("body", "fragment"), [
    ({"name": "ok-name", "template": "no-such-template"}, "unknown template"),
    ({"name": "Bad_Name!"}, "name"),
    ({"name": "-leading"}, "name"),
    ({"name": "a" * 64}, "name"),
    ({"name": "ok-name", "ttl_seconds": -5}, "ttl_seconds"),
    ({"name": "ok-name", "ttl_seconds": "soon"}, "ttl_seconds"),
    ({"name": "ok-name", "ttl_seconds": True}, "ttl_seconds"),  # not 1 s
    ({"name": "ok-name", "ttl_seconds": "3600"}, "ttl_seconds"),
    ({"name": "ok-name", "memory_mb": 512.0}, "memory_mb"),
    ({"name": "ok-name", "cpus": "1"}, "cpus"),
    ({"name": "ok-name", "cpus": 0}, "cpus"),
    ({"name": "ok-name", "memory_mb": 1}, "memory_mb"),
    ({"name": "ok-name", "labels": {"bad key!": "x"}}, "label"),
    ({"name": "ok-name", "env": {"1BAD": "x"}}, "environment"),
    ({"name": "ok-name", "repo_url": "ext::sh -c touch% /tmp/pwned"}, "repo_url"),
    ({"name": "ok-name", "branch": "main"}, "repo_url"),
    ({"name": "ok-name", "unexpected": 1}, "unexpected"),
    ({}, "name"),
])
def test_bad_create_input_is_a_clear_422_and_nothing_is_stored(api: httpx.Client, body: dict, fragment: str) -> None:
    before = workspace_ids(api)
    response = api.post("/api/v1/workspaces", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and fragment in detail
    assert workspace_ids(api) <= before


def test_request_bodies_take_json_types_as_they_are(api: httpx.Client, name: str) -> None:
    """No coercion: a boolean is not a number, a string is not a number; a whole number is a float."""
    for body in ({"seconds": True}, {"seconds": "60"}, {"seconds": 60.5}):
        response = api.post(f"/api/v1/workspaces/{name}/extend", json=body)
        assert response.status_code == 422 and "seconds" in response.json()["detail"], (body, response.text)
    assert api.post(f"/api/v1/workspaces/{name}/extend", json={"seconds": 60}).status_code == 404  # valid, no such ws
    run = {"argv": ["true"], "timeout_seconds": 5}
    assert api.post(f"/api/v1/workspaces/{name}/commands", json=run).status_code == 404
    for bad in ({"timeout_seconds": "5"}, {"stream": 1}, {"argv": ["echo", 1]}, {"env": {"A": 1}}):
        assert api.post(f"/api/v1/workspaces/{name}/commands", json={**run, **bad}).status_code == 422, bad
    assert api.post("/api/v1/tokens", json={"user": name, "admin": 1}).status_code == 422
    created = api.post("/api/v1/tokens", json={"user": name, "scope": "read", "ttl_seconds": 60})
    assert created.status_code == 201 and created.json()["token"]["scope"] == "read"
    assert api.put(f"/api/v1/quotas/{name}", json={"max_cpus": "2"}).status_code == 422
    quota = api.put(f"/api/v1/quotas/{name}", json={"max_cpus": 2, "max_workspaces": 3})
    assert quota.status_code == 200 and quota.json()["overrides"]["max_cpus"] == 2


def test_no_api_pages_that_load_scripts_from_elsewhere(api: httpx.Client) -> None:
    for page in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert api.get(page).status_code == 404, page
    assert api.get("/openapi.json").json()["info"]["title"] == "vmhost"


def test_malformed_json_oversized_body_and_unknown_routes_get_clear_4xx(daemon: Daemon, api: httpx.Client) -> None:
    response = api.post("/api/v1/workspaces", content=b'{"name": "x",', headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "malformed JSON" in response.json()["detail"]

    huge = b'{"name": "big", "labels": {"k": "' + b"x" * (2 * 1024 * 1024) + b'"}}'
    response = api.post("/api/v1/workspaces", content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]

    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404 and "no such endpoint" in response.json()["detail"]
    assert api.post("/api/v1/workspaces/x/actions/explode").status_code == 422
    assert api.get("/api/v1/workspaces/no-such-ws").status_code == 404
    assert api.get("/api/v1/operations/op_missing").status_code == 404
    # and the daemon keeps serving
    assert api.get("/health").json()["status"] == "ok"
