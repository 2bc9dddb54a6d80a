"""Online backups and safe restores of the database file, with the standard library's sqlite3 only
(so the CLI can restore without loading the daemon's dependencies)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from vmhost.errors import InvalidInput
from vmhost.paths import private_file

SIDE_FILES = ("-wal", "-shm", "-journal")


def online_backup(db_path: Path, target: Path) -> None:
    """A consistent copy of a live database into `target`, as one self-contained file (0600).

    Its own connection reads a snapshot (WAL mode lets the daemon keep writing meanwhile) and copies
    it in a single step, so every transaction is in the copy whole or not at all."""
    source = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    private_file(target)
    dest = sqlite3.connect(target)
    try:
        source.backup(dest, pages=-1)
        dest.execute("PRAGMA journal_mode = DELETE")
    finally:
        dest.close()
        source.close()


def check_database_file(path: Path) -> dict[str, int]:
    """Refuse a file that is not a sound vmhost database; returns its row counts per table."""
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
            tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables
                      if t in ("workspaces", "operations", "tokens", "events")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise InvalidInput(f"{path} is not a readable SQLite database: {exc}") from exc
    if problems != ["ok"]:
        raise InvalidInput(f"{path} fails SQLite's integrity check: {'; '.join(problems[:3])}")
    if "workspaces" not in counts:
        raise InvalidInput(f"{path} is not a vmhost database (it has no workspaces table)")
    return counts


def restore(source: Path, db_path: Path) -> Path | None:
    """Replace the (stopped) daemon's database with `source`. The old database, with whatever its
    write-ahead log still held, is kept as `<db>.bak`; returns that path when there was one."""
    check_database_file(source)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    incoming = db_path.with_name(f"{db_path.name}.restoring")
    online_backup(source, incoming)
    kept = None
    if db_path.exists():
        kept = db_path.with_name(f"{db_path.name}.bak")
        online_backup(db_path, kept)  # folds the old write-ahead log in
        _copy_ownership(db_path, kept)
        _copy_ownership(db_path, incoming)
    else:  # the daemon's user owns its state directory; root restoring must not leave a file it can't write
        _copy_ownership(db_path.parent, incoming, mode=0o600)
    with open(incoming, "rb+") as handle:
        os.fsync(handle.fileno())
    # a stale write-ahead log must never be replayed onto the restored file
    for suffix in SIDE_FILES:
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    os.replace(incoming, db_path)
    return kept


def _copy_ownership(like: Path, path: Path, mode: int | None = None) -> None:
    info = like.stat()
    os.chmod(path, info.st_mode & 0o777 if mode is None else mode)
    if os.geteuid() == 0:
        os.chown(path, info.st_uid, info.st_gid)
