"""The durable event outbox: events are stored here before they are sent.

A row is written (and committed, WAL, ``synchronous=FULL``) before the event is
published, remembers the MQTT message id it was last sent under, and is deleted
only when the broker acknowledges that message id (PUBACK). After every
(re)connect everything still pending is sent again in order; the controller
ingests events idempotently by their ``id``, so duplicates are harmless.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from receiver.files import private_dir, private_file

logger = logging.getLogger(__name__)

EARLY_ACK_TTL_S = 30.0
"""How long an acknowledgement that arrived before :meth:`Outbox.mark_sent` is remembered."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL DEFAULT 1,
    created_ms INTEGER NOT NULL,
    mid INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_mid ON outbox (mid);
"""


@dataclass(frozen=True)
class PendingEvent:
    """One stored event not yet acknowledged by the broker."""

    seq: int
    event_id: str
    topic: str
    payload: bytes
    qos: int
    mid: int | None


class Outbox:
    """A thread-safe SQLite table of events waiting for their PUBACK."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_dir(self.path.parent)
        private_file(self.path)  # SQLite gives its -wal and -shm files the database file's mode
        self._lock = threading.Lock()
        self._early_acks: dict[int, float] = {}
        self._db: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=30
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        # Message ids belong to the MQTT client of a previous run: forget them.
        self._db.execute("UPDATE outbox SET mid = NULL WHERE mid IS NOT NULL")

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"outbox {self.path} is closed")
        return self._db

    def add(self, topic: str, payload: bytes, qos: int = 1, event_id: str | None = None) -> int:
        """Store an event durably and return its sequence number."""
        if event_id is None:
            event_id = _event_id(payload)
        with self._lock:
            cur = self._conn().execute(
                "INSERT INTO outbox (event_id, topic, payload, qos, created_ms) VALUES (?, ?, ?, ?, ?)",
                (event_id, topic, payload, qos, time.time_ns() // 1_000_000),
            )
            seq = cur.lastrowid
        assert seq is not None
        return seq

    def pending(self) -> list[PendingEvent]:
        """Every stored event, oldest first."""
        with self._lock:
            rows = (
                self._conn()
                .execute("SELECT seq, event_id, topic, payload, qos, mid FROM outbox ORDER BY seq")
                .fetchall()
            )
        return [PendingEvent(r[0], r[1], r[2], bytes(r[3]), r[4], r[5]) for r in rows]

    def count(self) -> int:
        """How many events wait for their acknowledgement."""
        with self._lock:
            (n,) = self._conn().execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(n)

    def mark_sent(self, seq: int, mid: int) -> None:
        """Remember that event ``seq`` was published as message ``mid``."""
        with self._lock:
            self._prune_early_acks()
            if self._early_acks.pop(mid, None) is not None:
                # The PUBACK overtook us: the event is already delivered.
                self._conn().execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                return
            self._conn().execute("UPDATE outbox SET mid = ? WHERE seq = ?", (mid, seq))

    def ack(self, mid: int) -> bool:
        """Delete the event the broker just acknowledged; returns whether one was found."""
        with self._lock:
            cur = self._conn().execute("DELETE FROM outbox WHERE mid = ?", (mid,))
            if cur.rowcount:
                return True
            self._prune_early_acks()
            self._early_acks[mid] = time.monotonic()
            return False

    def _prune_early_acks(self) -> None:
        limit = time.monotonic() - EARLY_ACK_TTL_S
        for mid in [m for m, t in self._early_acks.items() if t < limit]:
            del self._early_acks[mid]

    def close(self) -> None:
        """Close the database; further calls raise RuntimeError."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _event_id(payload: bytes) -> str:
    try:
        value = json.loads(payload.decode("utf-8")).get("id")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        value = None
    return str(value) if value else ""
