"""Telemetry: presence, heartbeats and events from receivers into the database.

The paho thread only enqueues; one ingest thread writes. Events are stored
idempotently by their uuid, so a receiver's outbox may resend freely.

The ingest thread writes what has queued up in one transaction (up to ``BATCH_MAX``
messages): a commit per message cost about 1.2 ms on SQLite, so the 2,000 answers of
1,000 clusters to an alert (ack, playback.started) took 2.5 s to become visible. A
batch that fails is rolled back whole and written again one message at a time, so one
bad message still costs only itself.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from controller.db import session_scope
from controller.models import Event, Fault, Presence, Publication, Receiver
from controller.services import areas
from schedules import events, topics, vocab
from schedules.events import now_ms
from schedules.heartbeat import Heartbeat, HeartbeatError
from schedules.planner import entry_of

logger = logging.getLogger(__name__)

SUBSCRIPTIONS = [
    (f"{topics.PREFIX}/rx/+/status", 1),
    (f"{topics.PREFIX}/rx/+/hb", 0),
    (f"{topics.PREFIX}/rx/+/events", 1),
]
MAX_PAYLOAD = 64 * 1024
BATCH_MAX = 200
"""At most this many queued messages are written in one transaction."""


@dataclass
class _Known:
    """What a batch looked up once: the event ids already stored (and those it adds), and its receivers (held
    here so that the session keeps them for each message's lookup)."""

    event_ids: set[str]
    receivers: list[Receiver] = field(default_factory=list)


class Telemetry:
    """Receives rx/* messages and writes them with one background thread."""

    def __init__(self, app: Flask):
        self.app = app
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=100_000)
        self._thread = threading.Thread(target=self._run, name="telemetry-ingest", daemon=True)
        self.ingested = 0
        self.on_ingested: Callable[[], None] | None = None
        """Called after each batch of messages is written (the alert live views wait on it)."""

    def start(self) -> None:
        """Start the ingest thread."""
        self._thread.start()

    def stop(self) -> None:
        """Drain and stop the ingest thread (a no-op when it never started)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(10)

    def on_message(self, topic: str, payload: bytes) -> None:
        """Called from the MQTT thread: enqueue only."""
        try:
            self._queue.put_nowait((topic, payload))
        except queue.Full:
            logger.error("telemetry queue full; dropping a message on %s", topic)

    def _run(self) -> None:
        while True:
            msg = self._queue.get()
            if msg is None:
                return
            batch = [msg]
            stop = False
            while len(batch) < BATCH_MAX:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self.handle_batch(batch)
            if self.on_ingested is not None and any(not topic.endswith("/hb") for topic, _ in batch):
                self.on_ingested()
            if stop:
                return

    def handle_batch(self, batch: list[tuple[str, bytes]]) -> None:
        """Write messages in one transaction; when that fails, roll it back and write them one by one."""
        if len(batch) > 1:
            try:
                with session_scope(self.app) as db:
                    known = self._prepare(db, batch)
                    for topic, payload in batch:
                        self._write(db, topic, payload, known)
                self.ingested += len(batch)
                return
            except Exception:  # noqa: BLE001 - rolled back whole: each is written again on its own
                logger.warning("a batch of %d messages could not be written at once; one by one now", len(batch),
                               exc_info=True)
        for topic, payload in batch:
            try:
                self.handle(topic, payload)
            except Exception:  # noqa: BLE001 - one bad message must not stop ingestion
                logger.exception("could not ingest a message on %s", topic)

    def handle(self, topic: str, payload: bytes) -> None:
        """Write one message to the database (synchronously)."""
        try:
            with session_scope(self.app) as db:
                self._write(db, topic, payload)
        except IntegrityError:
            # Another path stored the same event id between our check and the insert: it is there.
            logger.debug("message on %s was stored meanwhile", topic)
        self.ingested += 1

    @staticmethod
    def _prepare(db, batch: list[tuple[str, bytes]]) -> _Known:
        """Two queries for a whole batch: its receivers (into the session, so each message's lookup is free) and
        which of its event ids are stored already."""
        rx_ids: set[str] = set()
        event_ids: set[str] = set()
        for topic, payload in batch:
            parsed = topics.parse_rx_topic(topic)
            if parsed is None:
                continue
            rx_ids.add(parsed[0])
            if parsed[1] == "events" and len(payload) <= MAX_PAYLOAD:
                try:
                    event_id = json.loads(payload).get("id")
                except (ValueError, AttributeError, RecursionError):  # _event says what is wrong with it
                    continue
                if isinstance(event_id, str):
                    event_ids.add(event_id)
        receivers = db.scalars(select(Receiver).where(Receiver.id.in_(rx_ids))).all() if rx_ids else []
        stored = set(db.scalars(select(Event.id).where(Event.id.in_(event_ids)))) if event_ids else set()
        return _Known(event_ids=stored, receivers=list(receivers))

    def _write(self, db, topic: str, payload: bytes, known: _Known | None = None) -> None:
        """Write one message in ``db``'s transaction (not committed here; an error leaves it to the caller).

        ``known``: in a batch, the event ids stored before or earlier in it (then nothing is flushed here).
        """
        parsed = topics.parse_rx_topic(topic)
        if parsed is None:
            logger.debug("ignoring message on %s", topic)
            return
        rx_id, kind = parsed
        if len(payload) > MAX_PAYLOAD:
            logger.warning("rx=%s sent a %d-byte %s; dropped", rx_id, len(payload), kind)
            return
        rx = db.get(Receiver, rx_id)
        if rx is None:
            logger.warning("message from unknown receiver rx=%s on %s; dropped", rx_id, topic)
            return
        if rx.retired_ms is not None:
            # Its broker login was revoked: a retired box still talking is worth a look.
            logger.warning("message from retired receiver rx=%s on %s; dropped", rx_id, topic)
            return
        now = now_ms()
        if kind == "status":
            online = payload.strip() == b"online"
            if payload.strip() not in (b"online", b"offline"):
                logger.warning("rx=%s sent a status that is neither online nor offline; taken as offline", rx_id)
            if online != bool(rx.online) or db.scalar(select(Presence.id).where(Presence.rx_id == rx.id)
                                                      .limit(1)) is None:
                db.add(Presence(rx_id=rx.id, online=online, since_ms=now))
            rx.online = online
            rx.last_seen_ms = now
            logger.info("rx=%s is %s", rx_id, "online" if rx.online else "offline")
        elif kind == "hb":
            try:
                hb = json.loads(payload.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                logger.warning("rx=%s sent a heartbeat that is not JSON", rx_id)
                return
            rx.last_hb = json.dumps(hb, ensure_ascii=False)
            rx.last_seen_ms = now
            if not rx.online:  # a beat without a status message: it is there all the same
                db.add(Presence(rx_id=rx.id, online=True, since_ms=now))
            rx.online = True
            if isinstance(hb, dict):
                from controller.services.health import record_heartbeat  # 15-minute history (issue 7)

                record_heartbeat(db, rx.id, hb, now)
                self._check_manifests(db, rx, hb, now)
        else:
            self._event(db, rx, payload, now, known)

    def _event(self, db, rx: Receiver, payload: bytes, now: int, known: _Known | None = None) -> None:
        try:
            ev = events.decode(payload, any_type=True)
        except (ValueError, RecursionError) as exc:
            # Nothing of it is stored (it may not even be an event), but the receiver broke the protocol.
            logger.warning("rx=%s sent a malformed event (%d bytes): %s", rx.id, len(payload), exc)
            self._open_violation(db, rx, f"malformed event: {str(exc)[:300]}")
            return
        if ev["rx"] != rx.id:
            logger.warning("rx=%s sent an event claiming rx=%s; dropped", rx.id, ev["rx"])
            return
        if (ev["id"] in known.event_ids) if known is not None else (db.get(Event, ev["id"]) is not None):
            logger.debug("rx=%s event %s already ingested", rx.id, ev["id"])
            return
        rx.last_seen_ms = now
        ev, bad = self._checked(ev)
        if bad:
            self._protocol_violation(db, rx, ev, bad)
        item_id = str(ev["item_id"])[:200] if ev.get("item_id") else None
        db.add(Event(id=ev["id"], rx_id=rx.id, ts_ms=int(ev["ts"]), type=ev["type"], item_id=item_id,
                     programme_item_id=entry_of(item_id) if item_id else None,
                     body=json.dumps(ev, ensure_ascii=False), received_ms=now))
        if ev["type"] == events.FAULT_RAISED:
            code = ev["fault"]
            open_fault = db.scalars(select(Fault).where(Fault.rx_id == rx.id, Fault.code == code,
                                                        Fault.cleared_ms.is_(None))).first()
            if open_fault is None:
                db.add(Fault(rx_id=rx.id, code=code, detail=str(ev.get("reason", ""))[:2000], raised_ms=int(ev["ts"])))
        elif ev["type"] == events.FAULT_CLEARED:
            code = ev["fault"]
            for fault in db.scalars(select(Fault).where(Fault.rx_id == rx.id, Fault.code == code,
                                                        Fault.cleared_ms.is_(None))):
                fault.cleared_ms = int(ev["ts"])
        if known is not None:
            known.event_ids.add(ev["id"])  # written with the batch's commit
        else:
            db.flush()  # an IntegrityError (the same id stored meanwhile by another path) goes to the caller
        logger.info("rx=%s event %s %s item=%s", rx.id, ev["type"], ev["id"], ev.get("item_id"))

    def _check_manifests(self, db, rx: Receiver, hb: dict, now: int) -> None:
        """Raise ``manifest_missing`` while the receiver holds no manifest for a scope it follows; clear it after.

        A receiver that got its conf but not the manifests (a broker that lost its retained
        store) plays nothing and would otherwise look ``ok``. Only scopes the controller has
        published a manifest for count, and only once the receiver has been online for
        ``MANIFEST_GRACE_S`` (retained manifests arrive within seconds of connecting).
        """
        try:
            held = set(Heartbeat.decode(hb).manifests)
        except HeartbeatError:  # not a heartbeat of this protocol: it holds nothing we can count on
            held = set()
        followed = areas.receiver_scopes(db, rx.id, rx.area_id)
        published = set(db.scalars(select(Publication.scope).where(Publication.kind == "manifest",
                                                                    Publication.scope.in_(followed)).distinct()))
        missing = sorted(published - held)
        open_fault = db.scalars(select(Fault).where(Fault.rx_id == rx.id, Fault.code == vocab.MANIFEST_MISSING,
                                                    Fault.cleared_ms.is_(None))).first()
        if not missing:
            if open_fault is not None:
                open_fault.cleared_ms = now
            return
        since = db.scalar(select(func.max(Presence.since_ms)).where(Presence.rx_id == rx.id,
                                                                    Presence.online.is_(True)))
        if open_fault is None and since is not None and now - since >= int(self.app.config["MANIFEST_GRACE_S"]) * 1000:
            detail = "no manifest held for " + ", ".join(missing)
            logger.warning("rx=%s: %s", rx.id, detail)
            db.add(Fault(rx_id=rx.id, code=vocab.MANIFEST_MISSING, detail=detail[:2000], raised_ms=now))

    @staticmethod
    def _checked(ev: dict) -> tuple[dict, list[tuple[str, object]]]:
        """The event with its type and words checked against the shared vocabulary (others become ``unknown``)."""
        bad: list[tuple[str, object]] = []
        if ev["type"] not in events.TYPES:
            bad.append(("type", ev["type"]))
            ev = {**ev, "type": vocab.UNKNOWN, "raw_type": str(ev["type"])[:200]}
        ev, words = vocab.sanitise(ev)
        return ev, bad + words

    @staticmethod
    def _protocol_violation(db, rx: Receiver, ev: dict, bad: list[tuple[str, object]]) -> None:
        """Open (or keep open) a ``protocol_violation`` fault for ``rx``: it sent words nobody agreed on."""
        detail = "; ".join(f"{field}={str(value)[:200]!r}" for field, value in bad)
        logger.warning("rx=%s event %s breaks the protocol (%s); stored as unknown", rx.id, ev["id"], detail)
        Telemetry._open_violation(db, rx, detail)

    @staticmethod
    def _open_violation(db, rx: Receiver, detail: str) -> None:
        """Open a ``protocol_violation`` fault for ``rx`` unless one is open (its first detail stays)."""
        open_fault = db.scalars(select(Fault).where(Fault.rx_id == rx.id, Fault.code == vocab.PROTOCOL_VIOLATION,
                                                    Fault.cleared_ms.is_(None))).first()
        if open_fault is None:
            db.add(Fault(rx_id=rx.id, code=vocab.PROTOCOL_VIOLATION, detail=detail[:2000], raised_ms=now_ms()))
