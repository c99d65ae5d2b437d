"""The replay guard: nonces of the commands already obeyed, kept across restarts.

A nonce is remembered (SQLite, WAL, ``synchronous=FULL``, committed before the
command is acted on) until its command could no longer pass the ``ts`` window,
so a captured command published again is refused even after a reboot.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from receiver.files import private_dir, private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS nonce (
    nonce TEXT PRIMARY KEY,
    forget_after_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS nonce_forget ON nonce (forget_after_ms);
"""


class NonceStore:
    """A thread-safe set of seen nonces, each with the time after which it may be forgotten."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_dir(self.path.parent)
        private_file(self.path)  # SQLite gives its -wal and -shm files the database file's mode
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"nonce store {self.path} is closed")
        return self._db

    def add(self, nonce: str, forget_after_ms: int, now_ms: int) -> bool:
        """Record ``nonce``; False if it was already there (a replay). Prunes forgettable ones."""
        with self._lock:
            db = self._conn()
            db.execute("DELETE FROM nonce WHERE forget_after_ms < ?", (now_ms,))
            cur = db.execute(
                "INSERT OR IGNORE INTO nonce (nonce, forget_after_ms) VALUES (?, ?)", (nonce, forget_after_ms)
            )
            return cur.rowcount == 1

    def __contains__(self, nonce: object) -> bool:
        with self._lock:
            row = self._conn().execute("SELECT 1 FROM nonce WHERE nonce = ?", (nonce,)).fetchone()
        return row is not None

    def count(self) -> int:
        """How many nonces are remembered."""
        with self._lock:
            (n,) = self._conn().execute("SELECT COUNT(*) FROM nonce").fetchone()
        return int(n)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
