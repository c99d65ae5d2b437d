"""Programme items: schedule a ready bulletin, list what is planned."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from flask import current_app, jsonify, request
from sqlalchemy import select

from controller.api import bp, check_area, require
from controller.api.bulletins import bulletin_in_scope
from controller.db import get_db
from controller.errors import ApiError
from controller.models import ProgrammeItem
from controller.runtime import services
from controller.services import areas
from controller.services.dispatch import item_wire_id
from schedules.events import now_ms
from schedules.manifest import PRIORITIES

MAX_SCHEDULE_AHEAD_MS = 400 * 24 * 3600 * 1000


def parse_local_time(text: str, tz: str) -> int:
    """``2026-11-22 17:30:05`` (or ISO with ``T``) in the local zone -> UTC epoch ms."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ApiError(400, "schedule.bad_time", f"start {text!r} is not YYYY-MM-DD HH:MM[:SS]",
                       "Thời gian phát không đúng dạng NNNN-TT-NN GG:PP.") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz))
    return int(dt.timestamp() * 1000)


def item_json(p: ProgrammeItem) -> dict:
    """API view of a programme item."""
    return {"id": p.id, "wire_id": item_wire_id(p), "bulletin": p.bulletin_id, "title": p.bulletin.title,
            "area": p.area_id, "start_ms": p.start_ms, "duration_ms": p.duration_ms, "priority": p.priority,
            "status": p.status}


@bp.post("/programme/items")
@require("operator")
def schedule_item(principal):
    """Place a ready bulletin at a local time (``start``) or epoch ms (``start_ms``) for an area."""
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "request.not_json", "body must be a JSON object", "Dữ liệu gửi lên không hợp lệ.")
    bulletin = bulletin_in_scope(principal, _int_field(data, "bulletin_id"))
    if bulletin.status != "ready" or bulletin.media is None:
        raise ApiError(409, "bulletin.not_ready", f"bulletin is {bulletin.status}, not ready",
                       "Bản tin chưa xử lý xong, chưa thể xếp lịch.")
    area = check_area(principal, str(data.get("area") or bulletin.area_id))
    if "start_ms" in data:
        start_ms = _int_field(data, "start_ms")
    elif isinstance(data.get("start"), str):
        start_ms = parse_local_time(data["start"], current_app.config["TIMEZONE"])
    else:
        raise ApiError(400, "schedule.bad_time", "give start (local time) or start_ms",
                       "Cần chọn thời gian phát.")
    now = now_ms()
    if start_ms < now - 1000:
        raise ApiError(422, "schedule.in_past", "the start time has passed", "Thời gian phát đã qua.")
    if start_ms > now + MAX_SCHEDULE_AHEAD_MS:
        raise ApiError(422, "schedule.too_far", "the start time is more than 400 days ahead",
                       "Thời gian phát quá xa (hơn 400 ngày).")
    priority = str(data.get("priority", "normal"))
    if priority not in PRIORITIES:
        raise ApiError(400, "schedule.bad_priority", f"priority must be one of {', '.join(PRIORITIES)}",
                       "Mức ưu tiên không hợp lệ.")
    db = get_db()
    item = ProgrammeItem(bulletin_id=bulletin.id, area_id=area.id, start_ms=start_ms,
                         duration_ms=bulletin.media.duration_ms, priority=priority, status="approved",
                         created_by=principal.id, created_ms=now)
    db.add(item)
    db.commit()
    svc = services()
    if svc is not None and svc.dispatcher is not None:
        svc.dispatcher.publish_areas([area.id])
    return jsonify({"item": item_json(item)}), 201


def _int_field(data: dict, name: str) -> int:
    value = data.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, "request.bad_field", f"{name} must be an integer", f"Trường {name} phải là số nguyên.")
    return value


@bp.get("/programme/items")
@require("viewer")
def list_items(principal):
    """Programme items of the visible areas from an hour ago on."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    rows = db.scalars(select(ProgrammeItem).where(ProgrammeItem.area_id.in_(visible),
                                                  ProgrammeItem.start_ms > now_ms() - 3600_000)
                      .order_by(ProgrammeItem.start_ms).limit(500))
    return jsonify({"items": [item_json(p) for p in rows]})
