"""Who is working where: the activity on each workspace, which the idle stop (vmhost.core.idle) counts.

Activity is recorded in memory, not in the database: `touch(workspace_id)` is a dictionary write under
a lock, cheap enough for every request. `flush()` (a worker, every FLUSH_INTERVAL seconds, and once more
when the daemon stops) writes what changed to the workspaces' `last_activity_at` column in one
transaction, never moving a stored time back. A long-lived session (a shell, a streamed command, an
event stream on the workspace, later a tunnel or an SSH session) holds a `session()` while it is open:
the workspace counts as active at every moment one is open, and the session's end is its last activity.

This is the one way in for whatever carries work to a workspace: the API's actions, commands, shells
and event streams call it today; port previews, tunnels and SSH sessions call `touch()` (a request,
some traffic) or hold a `session()` (a connection) the same way.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime
from types import TracebackType

from vmhost.core.models import utcnow
from vmhost.core.rows import to_text
from vmhost.core.store import Store
from vmhost.errors import VmhostError

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 30.0
"""Seconds between writes of the recorded activity to the database."""

Clock = Callable[[], datetime]


class ActivitySession:
    """One open session on a workspace (see Activity.session); `release()` is idempotent, from any thread."""

    def __init__(self, activity: Activity, workspace_id: str) -> None:
        self._activity = activity
        self.workspace_id = workspace_id
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._activity._end(self.workspace_id)

    def __enter__(self) -> ActivitySession:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()


class Activity:
    """The last activity on each workspace, kept in memory and flushed to the database now and then.
    `clock` gives the time (a test hands in its own); `started_at` is when this recorder (the daemon)
    started, which the idle stop counts as activity on every running workspace."""

    def __init__(self, store: Store, clock: Clock = utcnow) -> None:
        self.store = store
        self.clock = clock
        self.started_at = clock()
        self._last: dict[str, datetime] = {}  # recorded here; kept one flush longer than it takes to store it
        self._unsaved: set[str] = set()
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()

    def touch(self, workspace_id: str | None) -> None:
        """Something happened on the workspace now (an API action, a command, traffic)."""
        if workspace_id is None:
            return
        now = self.clock()
        with self._lock:
            if workspace_id not in self._last or self._last[workspace_id] < now:
                self._last[workspace_id] = now
            self._unsaved.add(workspace_id)

    def session(self, workspace_id: str) -> ActivitySession:
        """Count the workspace as active until the answer's `release()` (or the end of a `with` block)."""
        self.touch(workspace_id)
        with self._lock:
            self._open[workspace_id] += 1
        return ActivitySession(self, workspace_id)

    def _end(self, workspace_id: str) -> None:
        with self._lock:
            self._open[workspace_id] -= 1
            if self._open[workspace_id] <= 0:
                del self._open[workspace_id]
        self.touch(workspace_id)

    def open_sessions(self, workspace_id: str) -> int:
        with self._lock:
            return self._open.get(workspace_id, 0)

    def recorded(self, workspace_ids: Iterable[str]) -> dict[str, datetime]:
        """The last activity held in memory for each of these workspaces that has one: now for a workspace
        with a session open. What a flush stored stays here one flush longer, so whether this is read
        before or after the rows it is compared with, nothing falls between the two."""
        now = self.clock()
        with self._lock:
            found = {}
            for workspace_id in workspace_ids:
                if self._open.get(workspace_id):
                    found[workspace_id] = now
                elif workspace_id in self._last:
                    found[workspace_id] = self._last[workspace_id]
            return found

    def flush(self) -> int:
        """Write the activity recorded since the last flush to the workspaces' `last_activity_at` (only ever
        later), in one transaction; returns how many were written. A workspace with a session open is
        written as active now. What a flush wrote stays in memory until the next one (see `recorded`)."""
        with self._flushing:
            now = self.clock()
            with self._lock:
                for workspace_id in self._open:
                    self._last[workspace_id] = now
                    self._unsaved.add(workspace_id)
                unsaved = {workspace_id: self._last[workspace_id] for workspace_id in self._unsaved}
                self._unsaved.clear()
            if unsaved:
                rows = [(text, workspace_id, text) for workspace_id, text in
                        ((workspace_id, to_text(when)) for workspace_id, when in unsaved.items())]
                try:
                    with self.store.transaction() as conn:
                        conn.executemany("UPDATE workspaces SET last_activity_at = ? WHERE id = ? AND "
                                         "(last_activity_at IS NULL OR last_activity_at < ?)", rows)
                except VmhostError as exc:
                    log.warning("could not record the activity on %d workspace(s) yet: %s", len(unsaved), exc.detail)
                    with self._lock:
                        self._unsaved.update(unsaved)
                    return 0
            with self._lock:  # what was stored by an earlier flush and not touched since may go
                for workspace_id in list(self._last):
                    if (workspace_id not in self._unsaved and workspace_id not in unsaved
                            and workspace_id not in self._open):
                        del self._last[workspace_id]
            return len(unsaved)
