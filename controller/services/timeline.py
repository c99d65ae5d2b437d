"""The programme timeline of an area: sessions, the items its receivers hear, and what became of each.

Served by the API (``GET /api/v1/areas/<id>/timeline``) and drawn by the programme page: one
computation for both.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controller.models import Area, Event, MissedPlay
from controller.services import areas, asrun
from controller.services import programme as svc_programme
from schedules import topics
from schedules.events import PLAYBACK_FINISHED, now_ms
from schedules.planner import plan, session_slots


def play_state(start_ms: int, duration_ms: int, played: int, missed: int, now: int) -> str:
    """What became of an occurrence, as far as is known at ``now``.

    ``played`` (some receiver finished it) and ``missed`` (recorded misses) are what happened;
    otherwise ``scheduled`` before its start, ``playing`` until its end, and ``not_played`` after:
    its time passed and no receiver reported playing it (never "in the schedule")."""
    return asrun.play_state(start_ms, duration_ms, played, missed, now)


def timeline(db: Session, area: Area, first: date, days: int, tz: ZoneInfo) -> dict:
    """What receivers in ``area`` hear on ``days`` days from ``first``: sessions, items, over-runs, conflicts;
    each item with its ``state`` (:func:`play_state`)."""
    programme, nodes = svc_programme.load_programme(db)
    start = int(datetime.combine(first, datetime.min.time(), tz).timestamp() * 1000)
    window = days * 24 * 3600_000
    result = plan(programme, nodes, start, tz_name=str(tz), window_ms=window)
    chain = [a.id for a in areas.ancestors(db, area.id)]
    scopes = {topics.area_scope(a): a for a in chain}
    items = []
    for scope, manifest in result.manifests.items():
        if scope in scopes:
            items += [(scopes[scope], i) for i in manifest.items]
    ids = [i.id for _, i in items]
    played = dict(db.execute(select(Event.item_id, func.count(func.distinct(Event.rx_id)))
                             .where(Event.type == PLAYBACK_FINISHED, Event.item_id.in_(ids))
                             .group_by(Event.item_id)).all()) if ids else {}
    missed = dict(db.execute(select(MissedPlay.occurrence_id, func.count())
                             .where(MissedPlay.occurrence_id.in_(ids))
                             .group_by(MissedPlay.occurrence_id)).all()) if ids else {}
    node = next(n for n in nodes if n.id == area.id)
    sessions = [s for d in range(days) for s in session_slots(node, programme, first + timedelta(days=d), tz)]
    now = now_ms()
    return {
        "area": area.id, "from": first.isoformat(), "days": days, "window": [start, start + window],
        "sessions": [{"key": s.key, "name": s.name, "start_ms": s.start_ms, "end_ms": s.end_ms} for s in sessions],
        "items": [{"id": i.id, "item": int(i.id.split(".")[0][3:]), "title": i.title, "kind": i.kind,
                   "priority": i.priority, "start_ms": i.start_ms, "duration_ms": i.duration_ms, "from_area": a,
                   "played": played.get(i.id, 0), "missed": missed.get(i.id, 0),
                   "state": play_state(i.start_ms, i.duration_ms, played.get(i.id, 0), missed.get(i.id, 0), now)}
                  for a, i in sorted(items, key=lambda x: (x[1].start_ms, x[1].id))],
        "overruns": [vars(o) for o in result.overruns if o.area_id in chain],
        "underruns": [vars(u) for u in result.underruns if u.area_id == area.id],
        "conflicts": [vars(c) for c in result.conflicts if c.area_id == area.id or c.area_id in chain],
    }
