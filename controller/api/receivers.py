"""Receivers: status, last heartbeat, recent events, what they played."""

from __future__ import annotations

import json

from flask import jsonify, request
from sqlalchemy import select

from controller.api import bp, receiver_in_scope, require
from controller.db import get_db
from controller.models import Event, Receiver
from controller.services import areas, health
from schedules.events import now_ms


def receiver_json(rx: Receiver, detail: bool = False) -> dict:
    """API view of a receiver; ``detail`` adds the last heartbeat and recent events."""
    # While the controller has lost the broker it cannot know who is online: null, "unknown since T".
    lost = health.broker_lost_since()
    online = None if lost is not None else bool(rx.online and rx.last_seen_ms
                                                and now_ms() - rx.last_seen_ms < health.STALE_MS)
    out = {"id": rx.id, "name": rx.name, "area": rx.area_id, "online": online,
           "state": "unknown" if online is None else ("online" if online else "offline"), "unknown_since_ms": lost,
           "last_seen_ms": rx.last_seen_ms, "lat": rx.lat, "lon": rx.lon, "retired_ms": rx.retired_ms}
    if detail:
        db = get_db()
        out["heartbeat"] = json.loads(rx.last_hb) if rx.last_hb else None
        evs = db.scalars(select(Event).where(Event.rx_id == rx.id).order_by(Event.ts_ms.desc()).limit(50)).all()
        out["events"] = [json.loads(e.body) for e in evs]
        out["played"] = [
            {"item_id": e.item_id, "ts_ms": e.ts_ms, **{k: v for k, v in json.loads(e.body).items()
                                                      if k in ("played_ms", "planned_duration_ms", "scope")}}
            for e in evs if e.type == "playback.finished"
        ]
    return out


@bp.get("/receivers")
@require("viewer")
def list_receivers(principal):
    """Receivers of the visible areas in service (``?retired=1`` adds the retired ones)."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    query = select(Receiver).where(Receiver.area_id.in_(visible)).order_by(Receiver.id)
    if request.args.get("retired") != "1":
        query = query.where(Receiver.retired_ms.is_(None))
    rows = db.scalars(query)
    return jsonify({"receivers": [receiver_json(r) for r in rows]})


@bp.get("/receivers/<rx_id>")
@require("viewer")
def get_receiver(principal, rx_id: str):
    """One receiver: status, last heartbeat, recent events and what it played."""
    return jsonify({"receiver": receiver_json(receiver_in_scope(principal, rx_id), detail=True)})
