"""As-run bookkeeping: which due plays never started on which receiver, and why; what became of a play.

:func:`miss_reasons` says why a play never started from the presence history (``presence``,
one row per change of a receiver's broker presence), not from heartbeats near the start;
:func:`play_state` is the one rule for what became of an occurrence, used by the programme
timeline and the overview.
"""

from __future__ import annotations

import logging

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.db import session_scope
from controller.models import Event, MissedPlay, Presence, ProgrammeItem, Receiver
from controller.services import areas
from controller.services.programme import load_programme
from schedules import vocab
from schedules.events import MANIFEST_ACCEPTED, PLAYBACK_STARTED, now_ms
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


def play_state(start_ms: int, duration_ms: int, played: int, missed: int, now: int,
               expected: int | None = None) -> str:
    """What became of an occurrence, as far as is known at ``now``.

    ``played`` (receivers that finished it) and ``missed`` (recorded misses) are what happened;
    otherwise ``scheduled`` before its start, ``playing`` until its end, and ``not_played`` after:
    its time passed and no receiver reported playing it (never "in the schedule").

    With ``expected`` (the receivers that should have played it) the state follows the clock until
    the occurrence ends, and then the as-run record: ``played`` only when every one of them finished
    it, ``partial`` when some did, ``missed``/``not_played`` when none did, ``no_receivers`` when
    there was none to play it.
    """
    if expected is not None:
        if now < start_ms + duration_ms:
            return "scheduled" if now < start_ms else "playing"
        if played:
            return "partial" if played < expected else "played"
        if missed:
            return "missed"
        return "no_receivers" if expected <= 0 else "not_played"
    if played:
        return "played"
    if missed:
        return "missed"
    if now < start_ms:
        return "scheduled"
    return "playing" if now < start_ms + duration_ms else "not_played"


def miss_reasons(db: Session, plays: list[tuple[str, int, int | None]]) -> list[str]:
    """Why each ``(rx_id, planned_start_ms, programme_item_id)`` play never started (a word of
    :data:`schedules.vocab.MISS_REASONS`), from the presence history over the play's window.

    The window is the planned start to the start plus the item's duration. A receiver with no
    presence record before the window counts as offline (it had never connected).
    """
    if not plays:
        return []
    rx_ids = {rx for rx, _, _ in plays}
    items = {i for _, _, i in plays if i}
    durations = dict(db.execute(select(ProgrammeItem.id, ProgrammeItem.duration_ms)
                                .where(ProgrammeItem.id.in_(items))).all()) if items else {}
    windows = [(rx, start, start + max(0, int((durations.get(item) if item is not None else None) or 0)))
               for rx, start, item in plays]
    low, high = min(w[1] for w in windows), max(w[2] for w in windows)
    # Each receiver's state at ``low`` (its last change at or before it), then every change up to ``high``.
    last = (select(Presence.rx_id, func.max(Presence.since_ms).label("since_ms"))
            .where(Presence.rx_id.in_(rx_ids), Presence.since_ms <= low).group_by(Presence.rx_id).subquery())
    rows = list(db.execute(select(Presence.rx_id, Presence.since_ms, Presence.id, Presence.online)
                           .join(last, (last.c.rx_id == Presence.rx_id) & (last.c.since_ms == Presence.since_ms))))
    rows += db.execute(select(Presence.rx_id, Presence.since_ms, Presence.id, Presence.online).where(
        Presence.rx_id.in_(rx_ids), Presence.since_ms > low, Presence.since_ms <= high)).all()
    history: dict[str, list[tuple[int, int, bool]]] = {}
    for rx, since, row_id, online in sorted(rows, key=lambda r: (r[1], r[2])):
        history.setdefault(rx, []).append((since, row_id, bool(online)))
    created = dict(db.execute(select(Receiver.id, Receiver.created_ms).where(Receiver.id.in_(rx_ids))).all())
    first_manifest = dict(db.execute(select(Event.rx_id, func.min(Event.received_ms)).where(
        Event.type == MANIFEST_ACCEPTED, Event.rx_id.in_(rx_ids)).group_by(Event.rx_id)).all())
    return [_miss_reason(history.get(rx, []), start, end, created.get(rx), first_manifest.get(rx))
            for rx, start, end in windows]


def _miss_reason(history: list[tuple[int, int, bool]], start: int, end: int, created: int | None,
                 first_manifest: int | None) -> str:
    if created is not None and created > start:
        return vocab.MISS_NOT_PROVISIONED
    at_start = False
    for since, _id, online in history:
        if since > start:
            break
        at_start = online
    during = [online for since, _id, online in history if start < since <= end]
    if not at_start:
        return vocab.MISS_CAME_ONLINE if any(during) else vocab.MISS_OFFLINE
    if first_manifest is None or first_manifest > start:
        return vocab.MISS_NO_MANIFEST
    if not all(during):
        return vocab.MISS_WENT_OFFLINE
    return vocab.MISS_NO_START
