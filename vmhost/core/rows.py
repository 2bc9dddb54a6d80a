"""How the models are kept in the database's rows: times as ISO text (of one format, so they sort as
they compare), lists and mappings as JSON, enums by value; and the small pieces of SQL the queries share.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from vmhost.core.models import (
    Event,
    Operation,
    OperationStatus,
    Scope,
    Snapshot,
    SnapshotStatus,
    Token,
    Workspace,
    WorkspaceStatus,
)

_WS_JSON = {"labels", "env", "command", "provision", "plugins", "ports", "capabilities", "post_start", "post_attach",
            "port_labels", "sources"}
_OP_JSON = {"params", "result"}
_WS_TIMES = {"created_at", "updated_at", "expires_at", "last_activity_at", "autostart_fired_at",
             "autostop_fired_at"}
_OP_TIMES = {"created_at", "started_at", "finished_at"}
_TOKEN_TIMES = {"created_at", "expires_at", "last_used_at", "revoked_at"}
_SNAPSHOT_TIMES = {"created_at"}


def to_text(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds")


def from_text(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def equal_to(**columns: Any) -> tuple[list[str], list[Any]]:
    """`column = ?` conditions for each column given a value (None means: any), with their parameters."""
    given = {column: value for column, value in columns.items() if value is not None}
    return [f"{column} = ?" for column in given], list(given.values())


def where_clause(conditions: Sequence[str]) -> str:
    return " WHERE " + " AND ".join(conditions) if conditions else ""


def field_values(instance: Any) -> dict[str, Any]:
    """A dataclass instance's fields by name (the values themselves, not copies)."""
    return {f.name: getattr(instance, f.name) for f in fields(instance)}


def workspace_columns(values: Mapping[str, Any]) -> dict[str, Any]:
    """A workspace's fields (all of them or some) as the values of their columns."""
    return _encode(values, _WS_JSON, _WS_TIMES)


def operation_columns(values: Mapping[str, Any]) -> dict[str, Any]:
    return _encode(values, _OP_JSON, _OP_TIMES)


def snapshot_columns(values: Mapping[str, Any]) -> dict[str, Any]:
    return _encode(values, set(), _SNAPSHOT_TIMES)


def token_columns(values: Mapping[str, Any]) -> dict[str, Any]:
    return _encode(values, set(), _TOKEN_TIMES)


def workspace_from_row(row: sqlite3.Row) -> Workspace:
    data = _decode(row, _WS_JSON, _WS_TIMES)
    data["status"] = WorkspaceStatus(data["status"])
    data["devcontainer"] = bool(data["devcontainer"])
    return Workspace(**data)


def operation_from_row(row: sqlite3.Row) -> Operation:
    data = _decode(row, _OP_JSON, _OP_TIMES)
    data["status"] = OperationStatus(data["status"])
    return Operation(**data)


def token_from_row(row: sqlite3.Row) -> Token:
    data = _decode(row, set(), _TOKEN_TIMES)
    data.pop("hash")
    data["scope"] = Scope(data["scope"])
    data["admin"] = bool(data["admin"])
    return Token(**data)


def event_from_row(row: sqlite3.Row) -> Event:
    data = _decode(row, {"payload"}, {"time"})
    return Event(**data)


def snapshot_from_row(row: sqlite3.Row) -> Snapshot:
    data = _decode(row, set(), _SNAPSHOT_TIMES)
    data["status"] = SnapshotStatus(data["status"])
    return Snapshot(**data)


def _encode(values: Mapping[str, Any], json_fields: set[str], time_fields: set[str]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if key in json_fields:
            value = json.dumps(value)
        elif key in time_fields:
            value = to_text(value)
        elif hasattr(value, "value"):  # enums
            value = value.value
        out[key] = value
    return out


def _decode(row: sqlite3.Row, json_fields: set[str], time_fields: set[str]) -> dict[str, Any]:
    out = {}
    for key in row.keys():
        value = row[key]
        if key in json_fields:
            value = json.loads(value) if value else None
        elif key in time_fields:
            value = from_text(value)
        out[key] = value
    return out
