"""Tiếp sóng ngay: relay a live stream (VOV, the province, the district studio) to areas now.

At ``emergency`` level a relay is an alert whose content is the stream (signed command per scope and
retained state: it pre-empts everything and late-comers join it; see :mod:`controller.api.alerts`).
At ``normal`` or ``priority`` level it is a play-once relay item of the programme, starting a few
seconds from now, approved by its sender (who must be an approver of every target) and published at
once; the planner weighs it against the programme by its priority, and the receivers' relay engine
plays its fallback bulletin while the stream is down, as for any relay item. Stopping it withdraws
the item: a receiver playing it ends it (``withdrawn``) when the new manifest arrives.
"""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import current_app, jsonify

from controller.api import bp, bulletin_in_scope, check_area, json_body, require
from controller.api.alerts import create_alert_from
from controller.db import get_db
from controller.errors import ApiError
from controller.models import ProgrammeItem, StreamSource
from controller.runtime import services
from controller.services import emergencies as em
from controller.services import programme as svc_programme
from controller.services.programme import audit
from schedules.events import now_ms

LEVELS = ("normal", "priority", "emergency")
LEAD_MS = 3000
"""A programme relay starts this long after the call: receivers get the manifest first."""
DEFAULT_DURATION_S = 30 * 60
MAX_DURATION_S = 6 * 3600


def _url_of(principal, data: dict) -> tuple[str, str]:
    """``(url, name)`` from a saved source (``source_id``) or a typed ``url``, checked like an alert's."""
    db = get_db()
    url: object
    if data.get("source_id") is not None:
        src = db.get(StreamSource, data["source_id"]) if isinstance(data["source_id"], int) else None
        if src is None or src not in em.stream_sources_for(db, principal):
            raise ApiError(404, "stream.not_found", "no such stream source", "Không tìm thấy nguồn phát.")
        url, name = src.url, src.name
    else:
        url, name = data.get("url"), str(data.get("name") or "")[:200]
    checked = em.check_stream_url(url, own=em.own_endpoints(current_app.config),
                                  allow_private=bool(current_app.config.get("ALERT_ALLOW_PRIVATE_STREAMS")))
    return checked, name or "Tiếp sóng"


@bp.post("/relays")
@require("approver")
def relay_now(principal):
    """Relay a stream now: ``{areas, url | source_id, level?, duration_s?, fallback_bulletin_id?, name?}``.

    ``level`` ``emergency`` answers 202 with the alert; ``normal`` (default) and ``priority`` answer 201
    with the programme item (``kind`` relay) that plays it from a few seconds from now.
    """
    data = json_body()
    db = get_db()
    level = data.get("level", "normal")
    if level not in LEVELS:
        raise ApiError(400, "relay.bad_level", "level must be normal, priority or emergency",
                       "Mức ưu tiên phải là thông thường, ưu tiên hoặc khẩn cấp.")
    area_ids = data.get("areas")
    if not isinstance(area_ids, list) or not area_ids or not all(isinstance(a, str) for a in area_ids):
        raise ApiError(400, "relay.no_targets", "areas: a non-empty list of area ids",
                       "Hãy chọn ít nhất một địa bàn để tiếp sóng.")
    duration_s = data.get("duration_s", DEFAULT_DURATION_S)
    if isinstance(duration_s, bool) or not isinstance(duration_s, int) or not 10 <= duration_s <= MAX_DURATION_S:
        raise ApiError(400, "relay.bad_duration", "duration_s: 10 s to 6 h",
                       "Thời lượng tiếp sóng từ 10 giây đến 6 giờ.")
    targets = [check_area(principal, a).id for a in dict.fromkeys(area_ids)]
    url, name = _url_of(principal, data)
    now = now_ms()
    if level == "emergency":
        return create_alert_from(principal, {
            "mode": "live", "areas": area_ids, "content": {"kind": "stream", "url": url, "name": name},
            "until_ms": now + duration_s * 1000, "chime": False, "repeat": 1, "title": name,
            "if_running": data.get("if_running")})
    fallback = data.get("fallback_bulletin_id")
    if fallback is not None:
        b = bulletin_in_scope(principal, fallback if isinstance(fallback, int) else -1)
        if b.status != "ready":
            raise ApiError(409, "bulletin.not_ready", "the fallback bulletin is not ready",
                           "Bản tin dự phòng chưa sẵn sàng.")
    start_ms = -(-(now + LEAD_MS) // 1000) * 1000  # a whole second: the programme places items by the second
    row = ProgrammeItem(kind="relay", title=name, relay_url=url, fallback_bulletin_id=fallback,
                        area_id=em.resolve_targets(db, principal, targets, []).owner,
                        targets=None if len(targets) == 1 else json.dumps(targets),
                        start_ms=start_ms, duration_ms=duration_s * 1000, priority=level, mode="once",
                        status="draft", created_by=principal.id, created_ms=now)
    if len(targets) == 1:
        row.area_id = targets[0]
    if not svc_programme.can_approve(principal, db, row):
        raise ApiError(403, "relay.forbidden", "relaying now needs an approver of every target area",
                       "Tiếp sóng ngay cần quyền duyệt ở mọi địa bàn đã chọn.")
    local = datetime.fromtimestamp(start_ms / 1000, ZoneInfo(current_app.config["TIMEZONE"]))
    row.day, row.at_s = local.date().isoformat(), local.hour * 3600 + local.minute * 60 + local.second
    row.status, row.approved_by, row.approved_ms = "approved", principal.id, now
    db.add(row)
    db.flush()
    audit(db, principal.id, "relay_now", "programme_item", row.id,
          {"url": url, "level": level, "targets": targets, "duration_s": duration_s, "fallback": fallback})
    db.commit()
    svc = services()
    if svc is not None:
        svc.dispatcher.publish_programme()  # now, not after the debounce: it starts in seconds
    return jsonify({"relay": {"kind": "programme", "item_id": row.id, "start_ms": row.start_ms,
                              "duration_ms": row.duration_ms, "level": level, "url": url, "targets": targets}}), 201


@bp.post("/relays/<int:item_id>/stop")
@require("approver")
def stop_relay(principal, item_id: int):
    """End a programme relay now: the item is withdrawn and the receivers playing it stop."""
    db = get_db()
    row = db.get(ProgrammeItem, item_id)
    if row is None or row.kind != "relay" or row.status not in svc_programme.LIVE_STATUSES \
            or not principal.may_touch(db, row.area_id):
        raise ApiError(404, "relay.not_found", "no such relay", "Không tìm thấy lượt tiếp sóng.")
    if not svc_programme.can_approve(principal, db, row):
        raise ApiError(403, "relay.forbidden", "stopping a relay needs an approver of every target area",
                       "Dừng tiếp sóng cần quyền duyệt ở mọi địa bàn của nó.")
    row.status = "deleted"
    audit(db, principal.id, "relay_stop", "programme_item", row.id, {})
    db.commit()
    svc = services()
    if svc is not None:
        svc.dispatcher.publish_programme()
    return jsonify({"relay": {"kind": "programme", "item_id": row.id, "stopped": True}})
