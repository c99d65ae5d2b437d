"""The overview page: receivers online and offline, status per area, the programme with what played."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, render_template
from sqlalchemy import case, func, select

from controller.db import get_db
from controller.models import Area, Event, Fault, MissedPlay, Receiver
from controller.pages import common
from controller.services import areas, asrun, health
from controller.services.health import in_fleet
from controller.services.programme import load_programme
from schedules.planner import plan, session_slots

bp = Blueprint("overview", __name__)


@bp.get("/")
def overview():
    """Receivers online/offline and the programme with what played."""
    principal = common.login_required()
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    now = common.now_ms()
    fresh = now - common.STALE_MS
    online_q = (Receiver.online.is_(True)) & (Receiver.last_seen_ms > fresh)
    counts = db.execute(select(Receiver.area_id, func.count(), func.sum(case((online_q, 1), else_=0)))
                        .where(in_fleet(visible)).group_by(Receiver.area_id)).all()
    total = sum(c for _, c, _ in counts)
    # Without the broker nobody can be heard: the count of who is online is not known (None).
    online = None if health.broker_lost_since() is not None else sum(int(o or 0) for _, _, o in counts)
    # Only the clusters that need a look: offline ones, at most 50 (the full table is on /clusters).
    receivers = db.scalars(select(Receiver).where(in_fleet(visible), ~online_q)
                           .order_by(Receiver.last_seen_ms.desc().nulls_last(), Receiver.id).limit(50)).all()
    # What plays from 12 hours ago to 36 hours ahead, occurrence by occurrence.
    programme, nodes = load_programme(db)
    since = now - 12 * 3600_000
    result = plan(programme, nodes, since, tz_name=current_app.config["TIMEZONE"], window_ms=48 * 3600_000)
    occurrences = sorted(((scope.removeprefix("area/"), i) for scope, m in result.manifests.items()
                          for i in m.items if scope.removeprefix("area/") in visible),
                         key=lambda x: (x[1].start_ms, x[1].id))[:300]
    ids = [i.id for _, i in occurrences]
    played = dict(db.execute(
        select(Event.item_id, func.count(func.distinct(Event.rx_id)))
        .where(Event.type == "playback.finished", Event.item_id.in_(ids))
        .group_by(Event.item_id)).all()) if ids else {}
    missed = dict(db.execute(select(MissedPlay.occurrence_id, func.count()).where(MissedPlay.occurrence_id.in_(ids))
                             .group_by(MissedPlay.occurrence_id)).all()) if ids else {}
    area_names = {a.id: a.name for a in db.scalars(select(Area).where(Area.id.in_(visible)))}
    parent = {n.id: n.parent_id for n in nodes}
    rx_per_area: dict[str, int] = {}
    for area_id, count, _online in counts:  # each area counts its own receivers and those below it
        node: str | None = area_id
        while node is not None:
            rx_per_area[node] = rx_per_area.get(node, 0) + count
            node = parent.get(node)
    rows = []
    for area_id, i in occurrences:
        # A past play's state is what the as-run record says: all, some or none of the clusters played it.
        expected = max(0, rx_per_area.get(area_id, 0) - len(i.exclude))
        done = played.get(i.id, 0)
        rows.append({"item": i, "area_id": area_id, "wire": i.id, "played": done, "expected": expected,
                     "state": asrun.play_state(i.start_ms, i.duration_ms, done, missed.get(i.id, 0), now, expected)})
    tz = ZoneInfo(current_app.config["TIMEZONE"])
    return render_template("overview.html", principal=principal, receivers=receivers, rows=rows, total=total,
                           area_names=area_names, online=online, now=now, is_online=common.is_online,
                           local_time=common.local_time, summary=health.summary(db, visible, now),
                           areas=_area_panel(db, visible, nodes, programme, rows, now, tz))


def _area_panel(db, visible: set[str], nodes, programme, rows: list[dict], now: int, tz: ZoneInfo) -> list[dict]:
    """Per area with clusters: ok / fault / offline (its own and those below), today's sessions, what plays now,
    open faults. Areas with no cluster are left out; at most 300 rows."""
    parent = {n.id: n.parent_id for n in nodes}
    by_id = {n.id: n for n in nodes}
    status: dict[str, dict[str, int]] = {}
    for area_id, counts in health.per_area(db, visible, now).items():
        node: str | None = area_id
        while node is not None and node in visible:  # a district shows its communes' clusters too
            acc = status.setdefault(node, {"total": 0, "ok": 0, "fault": 0, "offline": 0, "unknown": 0})
            for key, value in counts.items():
                acc[key] += value
            node = parent.get(node)
    faults: dict[str, int] = {}
    for area_id, n in db.execute(select(Receiver.area_id, func.count()).join(Fault, Fault.rx_id == Receiver.id)
                                 .where(in_fleet(visible), Fault.cleared_ms.is_(None)).group_by(Receiver.area_id)):
        node = area_id
        while node is not None and node in visible:
            faults[node] = faults.get(node, 0) + n
            node = parent.get(node)
    playing: dict[str, list[str]] = {}
    for r in rows:
        if r["state"] == "playing":
            playing.setdefault(r["area_id"], []).append(r["item"].title)
    today = datetime.fromtimestamp(now / 1000, tz).date()
    names = {a.id: a.name for a in db.scalars(select(Area).where(Area.id.in_(list(status))))}
    panel: list[dict] = []
    for area_id in sorted(status, key=lambda a: (a.count("/"), names.get(a, a)))[:300]:
        node = by_id.get(area_id)
        slots = session_slots(node, programme, today, tz) if node is not None else []
        # What plays here now: this area's items and those of the areas above.
        chain: list[str] = []
        up: str | None = area_id
        while up is not None:
            chain += playing.get(up, [])
            up = parent.get(up)
        counts = status[area_id]
        total = counts["total"] or 1
        panel.append({"id": area_id, "name": names.get(area_id, area_id), "counts": counts,
                      "pct": {k: round(100 * counts[k] / total, 1) for k in health.STATUSES},
                      "sessions": [{"name": s.name, "start_ms": s.start_ms, "end_ms": s.end_ms,
                                    "now": s.start_ms <= now < s.end_ms} for s in slots],
                      "playing": chain, "faults": faults.get(area_id, 0)})
    return panel
