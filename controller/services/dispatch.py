"""Dispatch: build, sign, version and publish manifests and receiver configs.

Publishing is idempotent: a message whose content has not changed since the
last version is not re-sent; a changed one gets the next version number and
is published retained with QoS 1.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.db import session_scope
from controller.models import Publication, Receiver
from controller.services import areas
from controller.services.programme import load_programme
from schedules import signing, topics
from schedules.conf import ReceiverConf
from schedules.events import now_ms
from schedules.planner import Plan, plan

logger = logging.getLogger(__name__)

# The controller also listens to what it publishes: the broker's retained copies arrive on every
# (re)subscription and each publish comes back, so it knows what the broker holds (see restore_retained).
RETAINED_SUBSCRIPTIONS = [(f"{topics.PREFIX}/sched/#", 1), (f"{topics.PREFIX}/conf/#", 1)]


class Dispatcher:
    """Publishes what the database says each scope and receiver should hold."""

    def __init__(self, app: Flask, key: Ed25519PrivateKey, publish):
        self.app = app
        self.key = key
        self._publish = publish  # callable(topic, payload: bytes, retain: bool)
        self._lock = threading.Lock()
        self._held: dict[str, tuple[str, int]] = {}  # topic -> (sha256 of what the broker holds, when seen)
        self._held_lock = threading.Lock()
        self._fleet_mark: tuple | None = None

    def plan_manifests(self, db: Session, now: int, out: list) -> Plan:
        """Plan every area for the 48-hour window and version each manifest whose content changed."""
        programme, nodes = load_programme(db)
        result = plan(programme, nodes, now, tz_name=self.app.config["TIMEZONE"])
        for scope, manifest in sorted(result.manifests.items()):
            self._version(db, "manifest", scope, manifest.content_hash(),
                          lambda version, m=manifest: replace(m, version=version).to_body(), out)
        return result

    def receiver_conf(self, db: Session, rx: Receiver, out: list) -> int | None:
        """Version a receiver's signed conf (its scopes) if it changed; the message is appended to ``out``."""
        scopes = areas.receiver_scopes(db, rx.id, rx.area_id)
        probe = ReceiverConf(rx=rx.id, version=1, scopes=scopes)
        content = hashlib.sha256(signing.canonical_json({"scopes": scopes, "volume": probe.volume})).hexdigest()
        return self._version(db, "conf", topics.rx_scope(rx.id), content,
                             lambda version: ReceiverConf(rx.id, version, scopes).to_body(), out)

    def publish_everything(self, now: int | None = None) -> int:
        """Publish every area's manifest and every receiver's conf that changed; returns how many."""
        now = now_ms() if now is None else now
        out: list[tuple[str, bytes]] = []
        with self._lock:
            with session_scope(self.app) as db:
                for rx in db.scalars(select(Receiver).where(Receiver.retired_ms.is_(None))):
                    self.receiver_conf(db, rx, out)
                self.plan_manifests(db, now, out)
            self._send(out)
        return len(out)

    def publish_programme(self) -> int:
        """Publish the manifests that a programme change altered (unchanged ones are not re-sent)."""
        out: list[tuple[str, bytes]] = []
        with self._lock:
            with session_scope(self.app) as db:
                self.plan_manifests(db, now_ms(), out)
            self._send(out)
        return len(out)

    def publish_receiver(self, rx_id: str) -> int:
        """Publish one receiver's conf if it changed (after provisioning or a move)."""
        out: list[tuple[str, bytes]] = []
        with self._lock:
            with session_scope(self.app) as db:
                rx = db.get(Receiver, rx_id)
                if rx is not None and rx.retired_ms is None:
                    self.receiver_conf(db, rx, out)
            self._send(out)
        return len(out)

    def publish_new_receivers(self) -> int:
        """Publish the confs of receivers added, moved or retired since the last look (by any process).

        One small query when nothing changed; the CLI's ``provision`` writes only to the
        database, and this is how its receiver gets a conf at once, not at the next refresh.
        """
        with session_scope(self.app) as db:
            mark = tuple(db.execute(select(func.count(), func.max(Receiver.created_ms),
                                           func.count(Receiver.retired_ms))).one())
        if mark == self._fleet_mark:
            return 0
        self._fleet_mark = mark
        out: list[tuple[str, bytes]] = []
        with self._lock:
            with session_scope(self.app) as db:
                for rx in db.scalars(select(Receiver).where(Receiver.retired_ms.is_(None))):
                    self.receiver_conf(db, rx, out)
            self._send(out)
        return len(out)

    def _send(self, out: list[tuple[str, bytes]]) -> None:
        # Only after the versions are committed: a message on the wire always has its row.
        for topic, payload in out:
            self._publish(topic, payload, True)
        if out:
            names = ", ".join(t.removeprefix(topics.PREFIX + "/") for t, _ in out[:5])
            logger.info("published %d signed message(s): %s%s", len(out), names, " ..." if len(out) > 5 else "")

    def republish_latest(self) -> int:
        """Send the newest stored version of every retained message again, unchanged.

        Needed after the embedded broker started empty; receivers treat an
        equal version as a no-op.
        """
        with self._lock, session_scope(self.app) as db:
            rows = self._latest_rows(db)
            for pub in rows:
                self._publish(_topic(pub.kind, pub.scope), pub.payload.encode("utf-8"), True)
        return len(rows)

    def observe_retained(self, topic: str, payload: bytes) -> None:
        """Note what the broker holds on a conf/sched topic (called from the MQTT thread: cheap)."""
        with self._held_lock:
            if payload:
                self._held[topic] = (hashlib.sha256(payload).hexdigest(), now_ms())
            else:  # an empty retained message clears the topic
                self._held.pop(topic, None)

    def restore_retained(self, since_ms: int = 0) -> int:
        """Publish again every latest conf and manifest whose exact bytes the broker does not hold.

        A broker restarted without its retained store (or a cluster node that lost it) would
        otherwise leave receivers provisioned or re-imaged afterwards with a conf and no
        manifest. Receivers treat an equal version as a no-op, so a spurious resend is harmless.
        Only what was seen since ``since_ms`` (the last connect: the broker sends its retained
        copies on every subscription) counts as held.
        """
        sent = 0
        with self._lock, session_scope(self.app) as db:
            for pub in self._latest_rows(db):
                topic = _topic(pub.kind, pub.scope)
                payload = pub.payload.encode("utf-8")
                with self._held_lock:
                    digest, seen = self._held.get(topic, ("", 0))
                if seen < since_ms or digest != hashlib.sha256(payload).hexdigest():
                    self._publish(topic, payload, True)
                    sent += 1
        if sent:
            logger.warning("the broker had lost %d retained conf/manifest message(s); published them again", sent)
        return sent

    def _latest_rows(self, db: Session):
        """The newest publication of each (kind, scope), retired receivers' confs left out."""
        newest = (select(Publication.kind, Publication.scope, func.max(Publication.version).label("v"))
                  .group_by(Publication.kind, Publication.scope).subquery())
        rows = db.scalars(select(Publication).join(
            newest, (Publication.kind == newest.c.kind) & (Publication.scope == newest.c.scope)
            & (Publication.version == newest.c.v))).all()
        retired = {f"rx/{r}" for r in db.scalars(select(Receiver.id).where(Receiver.retired_ms.is_not(None)))}
        return [p for p in rows if not (p.kind == "conf" and p.scope in retired)]

    def _latest(self, db: Session) -> dict[tuple[str, str], tuple[int, str]]:
        """``(kind, scope) -> (version, content_hash)`` of the newest publication of each, in one query."""
        newest = (select(Publication.kind, Publication.scope, func.max(Publication.version).label("v"))
                  .group_by(Publication.kind, Publication.scope).subquery())
        rows = db.execute(select(Publication.kind, Publication.scope, Publication.version, Publication.content_hash)
                          .join(newest, (Publication.kind == newest.c.kind) & (Publication.scope == newest.c.scope)
                                & (Publication.version == newest.c.v)))
        return {(k, s): (v, h) for k, s, v, h in rows}

    def _version(self, db: Session, kind: str, scope: str, content_hash: str, make_body, out: list) -> int | None:
        latest = db.info.get("loaxa.latest")
        if latest is None:
            latest = db.info["loaxa.latest"] = self._latest(db)
        last = latest.get((kind, scope))
        if last is not None and last[1] == content_hash:
            return None
        version = 1 if last is None else last[0] + 1
        payload = signing.sign(self.key, make_body(version))
        db.add(Publication(kind=kind, scope=scope, version=version, content_hash=content_hash,
                           payload=payload.decode("utf-8"), created_ms=now_ms()))
        latest[(kind, scope)] = (version, content_hash)
        out.append((_topic(kind, scope), payload))
        logger.debug("versioned %s %s as %d", kind, scope, version)
        return version


def _topic(kind: str, scope: str) -> str:
    if kind == "conf":
        return topics.conf(scope.removeprefix("rx/"))
    return topics.sched(scope)
