"""Per-user quotas: how many workspaces, how many CPUs and how much memory in total, the longest TTL,
and snapshots per workspace. Defaults come from the settings; an admin may override them per user.

Admins have no quota. A workspace that sets no cpus (or memory_mb), and whose template sets none,
counts as `default_cpus` (`default_memory_mb`): the container may use more, but a user cannot dodge
the quota by leaving the limits out. The workspace check runs inside the store transaction that
inserts the workspace, so parallel creates by one user never end above the limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from vmhost.core import validation
from vmhost.core.models import Caller, Scope, Workspace, utcnow
from vmhost.core.store import Store, to_text
from vmhost.errors import Forbidden, InvalidInput, QuotaExceeded


@dataclass(frozen=True)
class Limits:
    max_workspaces: int = 5
    max_cpus: float = 8.0
    max_memory_mb: int = 16384
    max_ttl_seconds: int = 30 * 86400
    max_snapshots: int = 10


LIMIT_NAMES = tuple(f.name for f in fields(Limits))


@dataclass(frozen=True)
class Usage:
    workspaces: int
    cpus: float
    memory_mb: int


@dataclass(frozen=True)
class UserQuota:
    user: str
    limits: Limits
    overrides: dict[str, Any]
    usage: Usage
    exempt: bool = False


def _format(number: float) -> str:
    return f"{number:g}"


class Quotas:
    def __init__(self, store: Store, defaults: Limits | None = None, default_cpus: float = 1.0,
                 default_memory_mb: int = 2048) -> None:
        self.store = store
        self.defaults = defaults or Limits()
        self.default_cpus = default_cpus
        self.default_memory_mb = default_memory_mb

    # -- reads ----------------------------------------------------------------------------------

    def _overrides(self, conn: sqlite3.Connection, user: str) -> dict[str, Any]:
        row = conn.execute("SELECT * FROM quotas WHERE user = ?", (user,)).fetchone()
        if row is None:
            return {}
        return {name: row[name] for name in LIMIT_NAMES if row[name] is not None}

    def _usage(self, conn: sqlite3.Connection, user: str) -> Usage:
        count, cpus, memory = conn.execute(
            "SELECT count(*), total(COALESCE(cpus, ?)), total(COALESCE(memory_mb, ?)) FROM workspaces WHERE owner = ?",
            (self.default_cpus, self.default_memory_mb, user)).fetchone()
        return Usage(workspaces=count, cpus=round(cpus, 3), memory_mb=int(memory))

    def quota(self, user: str, exempt: bool = False) -> UserQuota:
        with self.store.reading() as conn:
            overrides = self._overrides(conn, user)
            usage = self._usage(conn, user)
        return UserQuota(user=user, limits=replace(self.defaults, **overrides), overrides=overrides, usage=usage,
                         exempt=exempt)

    def show(self, caller: Caller, user: str) -> UserQuota:
        """A user's limits and use; users may see their own, admins anyone's."""
        validation.check_user(user)
        if not caller.can_see(user):
            raise Forbidden(f"only admins see the quota of another user ({user})")
        return self.quota(user, exempt=caller.admin and user == caller.user)

    # -- admin ----------------------------------------------------------------------------------

    def set(self, caller: Caller, user: str, overrides: dict[str, Any]) -> UserQuota:
        """Replace a user's overrides; a limit left out (or None) goes back to the default."""
        if not caller.admin:
            raise Forbidden("only admins set quotas")
        if caller.scope != Scope.WRITE:
            raise Forbidden("this token is read-only")
        validation.check_user(user)
        unknown = set(overrides) - set(LIMIT_NAMES)
        if unknown:
            raise InvalidInput(f"unknown quota limit(s): {', '.join(sorted(unknown))}; "
                               f"use {', '.join(LIMIT_NAMES)}")
        clean = {name: _check_limit(name, value) for name, value in overrides.items() if value is not None}
        with self.store.transaction() as conn:
            if clean:
                conn.execute("INSERT OR REPLACE INTO quotas (user, max_workspaces, max_cpus, max_memory_mb, "
                             "max_ttl_seconds, max_snapshots, updated_at, updated_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (user, *(clean.get(name) for name in LIMIT_NAMES), to_text(utcnow()), caller.user))
            else:
                conn.execute("DELETE FROM quotas WHERE user = ?", (user,))
        return self.quota(user)

    # -- checks ---------------------------------------------------------------------------------

    def ttl_for(self, caller: Caller, ttl_seconds: int | None) -> int | None:
        """The TTL a new workspace gets: the one asked for, if the quota allows it; else the longest."""
        if caller.admin:
            return ttl_seconds
        longest = self.quota(caller.user).limits.max_ttl_seconds
        if ttl_seconds is None:
            return longest
        if ttl_seconds > longest:
            raise QuotaExceeded(f"quota exceeded: {caller.user} may keep a workspace at most {longest} s "
                                f"(asked for a TTL of {ttl_seconds} s)")
        return ttl_seconds

    def create_check(self, caller: Caller, workspace: Workspace) -> Callable[[sqlite3.Connection], None] | None:
        """A check for Store.insert_workspace, run inside its transaction (None for admins)."""
        if caller.admin:
            return None
        user = caller.user

        def check(conn: sqlite3.Connection) -> None:
            limits = replace(self.defaults, **self._overrides(conn, user))
            used = self._usage(conn, user)
            if used.workspaces + 1 > limits.max_workspaces:
                raise QuotaExceeded(f"quota exceeded: {user} has {used.workspaces} of {limits.max_workspaces} "
                                    "workspaces")
            cpus = workspace.cpus if workspace.cpus is not None else self.default_cpus
            if used.cpus + cpus > limits.max_cpus + 1e-9:
                raise QuotaExceeded(f"quota exceeded: {user} uses {_format(used.cpus)} of {_format(limits.max_cpus)} "
                                    f"CPUs and this workspace asks for {_format(cpus)} more")
            memory = workspace.memory_mb if workspace.memory_mb is not None else self.default_memory_mb
            if used.memory_mb + memory > limits.max_memory_mb:
                raise QuotaExceeded(f"quota exceeded: {user} uses {used.memory_mb} of {limits.max_memory_mb} MB "
                                    f"of memory and this workspace asks for {memory} MB more")

        return check

    def check_snapshot(self, caller: Caller, workspace: Workspace, existing: int,
                       conn: sqlite3.Connection | None = None) -> None:
        """For the snapshot feature: raise QuotaExceeded when `workspace` already has as many snapshots as
        its owner may keep. Pass the `conn` of the transaction that adds the snapshot to hold under races."""
        if caller.admin:
            return
        if conn is None:
            with self.store.transaction() as own:
                limit = self._overrides(own, workspace.owner).get("max_snapshots", self.defaults.max_snapshots)
        else:
            limit = self._overrides(conn, workspace.owner).get("max_snapshots", self.defaults.max_snapshots)
        if existing >= limit:
            raise QuotaExceeded(f"quota exceeded: {workspace.owner} has {existing} of {limit} snapshots "
                                f"of workspace {workspace.name}")


def _check_limit(name: str, value: Any) -> int | float:
    if name == "max_cpus":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InvalidInput(f"{name} must be a number of at least 0, got {value!r}")
        return float(value)
    least = 1 if name == "max_ttl_seconds" else 0  # a TTL of 0 would mean no expiry at all
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidInput(f"{name} must be a whole number of at least {least}, got {value!r}")
    return value
