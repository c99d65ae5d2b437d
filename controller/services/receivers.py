"""A receiver as the API shows it: the one serialisation the receivers and fleet endpoints share."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from controller.db import get_db
from controller.models import Event, Receiver
from controller.services import health
from schedules.events import now_ms


def receiver_json(rx: Receiver, detail: bool = False) -> dict:
    """API view of a receiver; ``detail`` adds the last heartbeat and recent events."""
    # While the controller has lost the broker it cannot know who is online: null, "unknown since T".
    lost = health.broker_lost_since()
    online = None if lost is not None else bool(rx.online and rx.last_seen_ms
                                                and now_ms() - rx.last_seen_ms < health.STALE_MS)
    out: dict[str, Any] = {"id": rx.id, "name": rx.name, "area": rx.area_id, "online": online,
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
