"""As-run bookkeeping: which due plays never started on which receiver."""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.db import session_scope
from controller.models import Event, MissedPlay, Receiver
from controller.services import areas
from controller.services.programme import load_programme
from schedules.events import PLAYBACK_STARTED, now_ms
from schedules.planner import entry_of, plan

logger = logging.getLogger(__name__)
LOOKBACK_MS = 6 * 3600_000


def due_plays(db: Session, since_ms: int, until_ms: int, tz: str) -> list[tuple[str, int, str]]:
    """``(occurrence_id, planned_start_ms, rx_id)`` for every play that ended in ``[since, until)``."""
    programme, nodes = load_programme(db)
    result = plan(programme, nodes, since_ms, tz_name=tz, window_ms=until_ms - since_ms)
    receivers = db.scalars(select(Receiver).where(Receiver.retired_ms.is_(None))).all()
    members: dict[str, list[str]] = {}
    for node in nodes:
        subtree = areas.subtree_ids(db, node.id)
        members[node.id] = [r.id for r in receivers if r.area_id in subtree]
    due = []
    for scope, manifest in result.manifests.items():
        area_id = scope.removeprefix("area/")
        for item in manifest.items:
            if since_ms <= item.end_ms < until_ms:
                due += [(item.id, item.start_ms, rx) for rx in members.get(area_id, []) if rx not in item.exclude]
    return due


def mark_missed(app: Flask, now: int | None = None) -> int:
    """Record, once each, the plays due in the last hours that no receiver reported starting."""
    now = now_ms() if now is None else now
    until = now - int(app.config["MISSED_GRACE_S"]) * 1000
    found = 0
    with session_scope(app) as db:
        due = due_plays(db, until - LOOKBACK_MS, until, app.config["TIMEZONE"])
        if not due:
            return 0
        ids = {occ for occ, _, _ in due}
        started = set(db.execute(select(Event.item_id, Event.rx_id).where(
            Event.type == PLAYBACK_STARTED, Event.item_id.in_(ids))).all())
        known = set(db.execute(select(MissedPlay.occurrence_id, MissedPlay.rx_id).where(
            MissedPlay.occurrence_id.in_(ids))).all())
        for occ, start, rx in due:
            if (occ, rx) in started or (occ, rx) in known:
                continue
            db.add(MissedPlay(occurrence_id=occ, programme_item_id=entry_of(occ) or 0, rx_id=rx,
                              planned_start_ms=start, detected_ms=now))
            logger.warning("rx=%s missed %s (planned %s)", rx, occ, start)
            found += 1
    return found
