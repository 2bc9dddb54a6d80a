"""What the OpenAPI document says that FastAPI cannot derive from the routes: where the daemon listens
(`servers`), how callers prove who they are (`securitySchemes`), the tags in reading order, short
operation ids (each handler's name), and the 413 that every request body can meet (daemon/limits.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

SERVERS = [{
    "url": "{scheme}://{address}",
    "description": "The TCP listener (the `bind` setting; https when `tls_cert` is set). On the host the same "
                   "API is served on the Unix socket, which OpenAPI cannot name: send requests to "
                   "`http://vmhost` through the socket (`curl --unix-socket /run/vmhost/vmhost.sock`), without "
                   "credentials (the kernel tells the daemon the caller's uid).",
    "variables": {"scheme": {"default": "http", "enum": ["http", "https"]},
                  "address": {"default": "127.0.0.1:3121", "description": "host:port of `bind`"}},
}]

SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "An API token from `vmhost tokens create` or `POST /api/v1/tokens`, on TCP. "
                              "Browsers' WebSockets, which cannot send headers, pass it as `?token=`."},
    "proxy": {"type": "apiKey", "in": "header", "name": "X-VM-User",
              "description": "The user's name, set by an authenticating reverse proxy and believed only from "
                             "the addresses in `trusted_proxies` (anyone else sending it gets 401); "
                             "`X-VM-Email` may add their email. Never an admin."},
}
# either scheme; callers on the Unix socket need neither
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"proxy": []}]

TAGS = [
    {"name": "workspaces", "description": "Create, list, edit, start, stop, rebuild and delete workspaces; "
                                          "their container's output."},
    {"name": "commands", "description": "Run a command in a workspace, streamed or as an operation."},
    {"name": "files", "description": "Download and upload files and tar archives."},
    {"name": "snapshots", "description": "Take, restore and delete snapshots of a workspace."},
    {"name": "operations", "description": "What mutations answer with: follow, wait for or cancel them."},
    {"name": "events", "description": "What happened, oldest first (also live over `/ws/events`)."},
    {"name": "templates", "description": "What workspaces are made from."},
    {"name": "tokens", "description": "API tokens for callers on TCP."},
    {"name": "ssh-keys", "description": "SSH public keys for logging in to workspaces over SSH."},
    {"name": "quotas", "description": "Per-user limits and their use."},
    {"name": "identity", "description": "Who the daemon takes the caller for."},
    {"name": "audit", "description": "Who did what (admins)."},
    {"name": "admin", "description": "Operators' endpoints: doctor, orphans, backup, metrics."},
    {"name": "nodes", "description": "The hosts workspaces run on: a Swarm cluster's nodes (admins)."},
    {"name": "pools", "description": "Warm pools: workspaces of a template kept ready for creates to claim "
                                     "(admins)."},
    {"name": "health", "description": "Liveness, without authentication."},
]

TOO_LARGE = {"description": "Request body too large (`max_body_bytes`)",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def operation_id(route: APIRoute) -> str:
    """The route's name (its handler's, unless the route gives another), e.g. `list_workspaces`, where
    FastAPI would say `list_workspaces_api_v1_workspaces_get`."""
    return route.name


def install(app: FastAPI) -> None:
    """Make `app.openapi()` (and so `/openapi.json`) answer FastAPI's document completed as above."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(spec: dict[str, Any]) -> dict[str, Any]:
    spec.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
    for methods in spec["paths"].values():
        for operation in methods.values():
            if "requestBody" in operation:
                operation["responses"].setdefault("413", TOO_LARGE)
    # in the order a reader wants them: the API, where it is, how to get in, then its paths
    return {"openapi": None, "info": None, "servers": SERVERS, "security": SECURITY, "tags": TAGS, **spec}
