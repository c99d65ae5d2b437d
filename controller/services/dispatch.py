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


class Dispatcher:
    """Publishes what the database says each scope and receiver should hold."""

    def __init__(self, app: Flask, key: Ed25519PrivateKey, publish):
        self.app = app
        self.key = key
        self._publish = publish  # callable(topic, payload: bytes, retain: bool)
        self._lock = threading.Lock()

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
        count = 0
        with session_scope(self.app) as db:
            latest = (
                select(Publication.kind, Publication.scope, func.max(Publication.version).label("v"))
                .group_by(Publication.kind, Publication.scope)
                .subquery()
            )
            rows = db.execute(
                select(Publication).join(
                    latest,
                    (Publication.kind == latest.c.kind)
                    & (Publication.scope == latest.c.scope)
                    & (Publication.version == latest.c.v),
                )
            ).scalars()
            for pub in rows:
                self._publish(_topic(pub.kind, pub.scope), pub.payload.encode("utf-8"), True)
                count += 1
        return count

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
