"""Per-user quotas: how many workspaces, how many CPUs and how much memory in total, the longest TTL,
snapshots per workspace, processes in total, snapshot bytes on disk and the longest idle timeout.
Defaults come from the settings; an admin may override them per user.

Admins have no quota. What the quota counts is what the container gets (`container_limits`): a
workspace that sets no cpus (or memory_mb), and whose template sets none, counts as and is limited
to `default_cpus` (`default_memory_mb`). The process budget is split evenly over the workspaces the
user may have, so their containers together can never run more than `max_pids`. The workspace check
runs inside the store transaction that inserts the workspace, so parallel creates by one user never
end above the limit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from vmhost.config import Settings
from vmhost.core import validation
from vmhost.core.models import Caller, Workspace, utcnow
from vmhost.core.rows import to_text
from vmhost.core.store import Store
from vmhost.errors import InvalidInput, QuotaExceeded


@dataclass(frozen=True)
class Limits:
    """One user's limits; the defaults are the settings' quota_max_* (see `Quotas.from_settings`)."""

    max_workspaces: int
    max_cpus: float
    max_memory_mb: int
    max_ttl_seconds: int
    max_snapshots: int
    max_pids: int
    max_snapshot_bytes: int
    max_idle_timeout_seconds: int = 0  # 0: no maximum


LIMIT_NAMES = tuple(f.name for f in fields(Limits))


@dataclass(frozen=True)
class Usage:
    workspaces: int
    cpus: float
    memory_mb: int
    snapshot_bytes: int


@dataclass(frozen=True)
class ContainerLimits:
    """What a workspace's container may use: the numbers its owner's quota counts."""

    cpus: float
    memory_mb: int
    pids: int


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
    def __init__(self, store: Store, defaults: Limits, default_cpus: float, default_memory_mb: int) -> None:
        self.store = store
        self.defaults = defaults
        self.default_cpus = default_cpus
        self.default_memory_mb = default_memory_mb

    @classmethod
    def from_settings(cls, store: Store, settings: Settings) -> Quotas:
        """The quotas the settings give: their quota_max_* as every user's defaults, quota_default_*."""
        return cls(store, Limits(**{name: getattr(settings, f"quota_{name}") for name in LIMIT_NAMES}),
                   default_cpus=settings.quota_default_cpus, default_memory_mb=settings.quota_default_memory_mb)

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
        return Usage(workspaces=count, cpus=round(cpus, 3), memory_mb=int(memory),
                     snapshot_bytes=self._snapshot_bytes(conn, user))

    @staticmethod
    def _snapshot_bytes(conn: sqlite3.Connection, user: str) -> int:
        return int(conn.execute("SELECT total(image_bytes + volume_bytes) FROM snapshots WHERE owner = ?",
                                (user,)).fetchone()[0])

    def _limits(self, conn: sqlite3.Connection, user: str) -> Limits:
        return replace(self.defaults, **self._overrides(conn, user))

    def quota(self, user: str, exempt: bool = False) -> UserQuota:
        with self.store.reading() as conn:
            overrides = self._overrides(conn, user)
            usage = self._usage(conn, user)
        return UserQuota(user=user, limits=replace(self.defaults, **overrides), overrides=overrides, usage=usage,
                         exempt=exempt)

    def show(self, caller: Caller, user: str) -> UserQuota:
        """A user's limits and use; users may see their own, admins anyone's."""
        validation.check_user(user)
        if user != caller.user:
            caller.require_admin(f"see the quota of another user ({user})")
        return self.quota(user, exempt=caller.exempt_from_quotas and user == caller.user)

    # -- admin ----------------------------------------------------------------------------------

    def set(self, caller: Caller, user: str, overrides: dict[str, Any]) -> UserQuota:
        """Replace a user's overrides; a limit left out (or None) goes back to the default."""
        caller.require_admin("set quotas")
        caller.require_write()
        validation.check_user(user)
        unknown = set(overrides) - set(LIMIT_NAMES)
        if unknown:
            raise InvalidInput(f"unknown quota limit(s): {', '.join(sorted(unknown))}; "
                               f"use {', '.join(LIMIT_NAMES)}")
        clean = {name: _check_limit(name, value) for name, value in overrides.items() if value is not None}
        with self.store.transaction() as conn:
            if clean:
                conn.execute(f"INSERT OR REPLACE INTO quotas (user, {', '.join(LIMIT_NAMES)}, updated_at, updated_by) "
                             f"VALUES (?, {', '.join('?' for _ in LIMIT_NAMES)}, ?, ?)",
                             (user, *(clean.get(name) for name in LIMIT_NAMES), to_text(utcnow()), caller.user))
            else:
                conn.execute("DELETE FROM quotas WHERE user = ?", (user,))
        return self.quota(user)

    # -- checks ---------------------------------------------------------------------------------

    def ttl_for(self, caller: Caller, ttl_seconds: int | None) -> int | None:
        """The TTL a new workspace gets: the one asked for, if the quota allows it; else the longest."""
        if caller.exempt_from_quotas:
            return ttl_seconds
        longest = self.quota(caller.user).limits.max_ttl_seconds
        if ttl_seconds is None:
            return longest
        if ttl_seconds > longest:
            raise QuotaExceeded(f"quota exceeded: {caller.user} may keep a workspace at most {longest} s "
                                f"(asked for a TTL of {ttl_seconds} s)")
        return ttl_seconds

    def idle_timeout_for(self, caller: Caller, seconds: int | None, *, cap: bool = False) -> int | None:
        """The idle timeout a workspace gets: `seconds` (None: no idle stop) if the quota allows it. With a
        longest idle timeout in the quota, a workspace without one gets the longest, and a longer one is
        refused, or cut to the longest with `cap` (a template's value, which the user did not ask for)."""
        if caller.exempt_from_quotas:
            return seconds
        longest = self.quota(caller.user).limits.max_idle_timeout_seconds
        if not longest:
            return seconds
        if seconds is None:
            return longest
        if seconds > longest:
            if cap:
                return longest
            raise QuotaExceeded(f"quota exceeded: {caller.user} may leave a workspace idle at most {longest} s "
                                f"before it is stopped (asked for an idle timeout of {seconds} s)")
        return seconds

    def create_check(self, caller: Caller, workspace: Workspace) -> Callable[[sqlite3.Connection], None] | None:
        """A check for Store.insert_workspace, run inside its transaction (None for admins)."""
        if caller.exempt_from_quotas:
            return None
        user = caller.user

        def check(conn: sqlite3.Connection) -> None:
            limits = self._limits(conn, user)
            used = self._usage(conn, user)
            if used.workspaces + 1 > limits.max_workspaces:
                raise QuotaExceeded(f"quota exceeded: {user} has {used.workspaces} of {limits.max_workspaces} "
                                    "workspaces")
            cpus, memory = self._cpus(workspace), self._memory_mb(workspace)
            if used.cpus + cpus > limits.max_cpus + 1e-9:
                raise QuotaExceeded(f"quota exceeded: {user} uses {_format(used.cpus)} of {_format(limits.max_cpus)} "
                                    f"CPUs and this workspace asks for {_format(cpus)} more")
            if used.memory_mb + memory > limits.max_memory_mb:
                raise QuotaExceeded(f"quota exceeded: {user} uses {used.memory_mb} of {limits.max_memory_mb} MB "
                                    f"of memory and this workspace asks for {memory} MB more")

        return check

    def check_snapshot(self, caller: Caller, workspace: Workspace, existing: int,
                       conn: sqlite3.Connection | None = None) -> None:
        """For the snapshot feature: raise QuotaExceeded when `workspace` already has as many snapshots as
        its owner may keep, or its owner's snapshots already fill their disk budget. Pass the `conn` of the
        transaction that adds the snapshot to hold under races."""
        if caller.exempt_from_quotas:
            return
        if conn is None:
            with self.store.transaction() as own:
                self.check_snapshot(caller, workspace, existing, own)
            return
        limits = self._limits(conn, workspace.owner)
        if existing >= limits.max_snapshots:
            raise QuotaExceeded(f"quota exceeded: {workspace.owner} has {existing} of {limits.max_snapshots} "
                                f"snapshots of workspace {workspace.name}")
        used = self._snapshot_bytes(conn, workspace.owner)
        if used >= limits.max_snapshot_bytes:
            raise QuotaExceeded(f"quota exceeded: {workspace.owner}'s snapshots take {used} of "
                                f"{limits.max_snapshot_bytes} bytes; delete snapshots to make room")

    def snapshot_room(self, owner: str) -> int:
        """Bytes a new snapshot of `owner`'s may take: what their budget leaves beside the snapshots taken."""
        with self.store.reading() as conn:
            return self._limits(conn, owner).max_snapshot_bytes - self._snapshot_bytes(conn, owner)

    def snapshot_too_large(self, owner: str, room: int) -> QuotaExceeded:
        """The refusal of a snapshot found, while it was taken, to need more than the `room` it had."""
        limit = self.quota(owner).limits.max_snapshot_bytes
        return QuotaExceeded(f"quota exceeded: {owner}'s snapshots may take {limit} bytes and this one needs "
                             f"more than the {max(room, 0)} left; it was discarded (delete snapshots to make room)")

    def container_limits(self, workspace: Workspace) -> ContainerLimits:
        """The CPU, memory and process limits of the workspace's container (for admins' workspaces too)."""
        with self.store.reading() as conn:
            limits = self._limits(conn, workspace.owner)
        return ContainerLimits(cpus=self._cpus(workspace), memory_mb=self._memory_mb(workspace),
                               pids=max(1, limits.max_pids // max(1, limits.max_workspaces)))

    def _cpus(self, workspace: Workspace) -> float:
        return workspace.cpus if workspace.cpus is not None else self.default_cpus

    def _memory_mb(self, workspace: Workspace) -> int:
        return workspace.memory_mb if workspace.memory_mb is not None else self.default_memory_mb


def _check_limit(name: str, value: Any) -> int | float:
    if name == "max_cpus":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise InvalidInput(f"{name} must be a number of at least 0, got {value!r}")
        return float(value)
    # a TTL of 0 would mean no expiry at all, and a pids limit of 0 no limit
    least = 1 if name in ("max_ttl_seconds", "max_pids") else 0
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InvalidInput(f"{name} must be a whole number of at least {least}, got {value!r}")
    return value
