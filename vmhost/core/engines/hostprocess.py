"""The host's view of processes (/proc): whether a pid runs in a given container, and killing a process
with every process it started. For an engine that runs its containers' processes on this host and
reports their host pids."""

from __future__ import annotations

import os
import signal


def in_container(pid: int, container_id: str) -> bool:
    """Whether host process `pid` runs in the container (its cgroup names the container's id)."""
    try:
        with open(f"/proc/{pid}/cgroup") as handle:
            return bool(container_id) and container_id in handle.read()
    except OSError:
        return False


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) for every process this host shows."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


def _process_tree(root: int) -> set[int]:
    """`root`, the members of its process group, and all their descendants."""
    table = _process_table()
    tree = {pid for pid, (_, group) in table.items() if pid == root or group == root}
    while True:
        children = {pid for pid, (parent, _) in table.items() if parent in tree} - tree
        if not children:
            return tree
        tree |= children


def kill_process_tree(root: int) -> None:
    """SIGKILL a process with its process group and descendants. Each is stopped first, so none can
    start a child that the sweep misses."""
    victims: set[int] = set()
    while True:
        found = _process_tree(root) - victims
        if not found:
            break
        for pid in found:
            _signal(pid, signal.SIGSTOP)
        victims |= found
    for pid in victims:
        _signal(pid, signal.SIGKILL)


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass
