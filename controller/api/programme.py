"""The programme: items (CRUD, approval), session templates, extra sessions, timeline, audit."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session

from controller import auth
from controller.api import area_or_404, bp, bulletin_in_scope, check_area, json_body, require
from controller.db import get_db
from controller.errors import FORBIDDEN, ApiError
from controller.models import (
    ApiToken,
    AuditEntry,
    ExtraSessionRow,
    ProgrammeItem,
    Receiver,
    SessionTemplateRow,
    User,
)
from controller.runtime import services
from controller.services import areas
from controller.services import programme as svc_programme
from controller.services.items import parse_date, parse_item
from controller.services.programme import (
    LIVE_STATUSES,
    Placement,
    audit,
    entry_from_row,
    seconds_to_time,
    templates_of,
    time_to_seconds,
    weekdays_to_mask,
)
from controller.services.timeline import timeline
from schedules.events import now_ms
from schedules.planner import occurrence_id
from schedules.programme import (
    ExtraSession,
    ProgrammeError,
    SessionTemplate,
    parse_hhmm,
    validate_sessions,
)


def _tz() -> ZoneInfo:
    return ZoneInfo(current_app.config["TIMEZONE"])


def _today(tz: ZoneInfo) -> date:
    """The local date now, by the same clock as everything else here (``now_ms``)."""
    return datetime.fromtimestamp(now_ms() / 1000, tz).date()


def item_json(p: ProgrammeItem) -> dict:
    """API view of a programme item."""
    e = entry_from_row(p)
    out = {
        "id": p.id, "kind": p.kind, "title": e.title, "bulletin": p.bulletin_id, "fallback": p.fallback_bulletin_id,
        "relay_url": p.relay_url, "area": p.area_id, "targets": list(e.areas), "exclude": list(e.exclude),
        "priority": p.priority, "session": p.session_key,
        "at": e.at.strftime("%H:%M:%S") if e.at else None, "mode": p.mode, "date": p.day,
        "weekdays": sorted(e.weekdays), "date_from": p.date_from, "date_to": p.date_to, "repeat": p.repeat_count,
        "gap_s": p.repeat_gap_s, "order": p.sort_order, "duration_ms": p.duration_ms, "start_ms": p.start_ms,
        "status": p.status, "created_by": p.created_by, "approved_by": p.approved_by,
    }
    if p.mode == "once" and e.day and e.at is not None:
        out["occurrences"] = [occurrence_id(p.id, a, e.day, r) for a in e.areas for r in range(p.repeat_count)]
    return out


def _row_input(p: ProgrammeItem) -> dict:
    """A stored item as the request body that would create it (PATCH merges into this)."""
    j = item_json(p)
    body = {k: j[k] for k in ("kind", "title", "relay_url", "area", "targets", "exclude", "priority", "mode",
                              "weekdays", "date_from", "date_to", "repeat", "gap_s", "order")}
    body.update(bulletin_id=p.bulletin_id, fallback_bulletin_id=p.fallback_bulletin_id, date=p.day)
    if p.kind == "relay":
        body["duration_s"] = p.duration_ms // 1000
    if p.session_key:
        body["session"] = p.session_key
    else:
        body["at"] = j["at"]
    return {k: v for k, v in body.items() if v is not None}


def _parse(principal: auth.Principal, db: Session, data: dict, now: int) -> dict:
    """The item's column values from a request body, ids looked up within the caller's areas."""
    return parse_item(principal, db, data, now, current_app.config["TIMEZONE"],
                      bulletin_of=lambda bid: bulletin_in_scope(principal, bid),
                      area_of=lambda area_id: check_area(principal, area_id))


def _changed() -> None:
    svc = services()
    if svc is not None:
        svc.programme_changed()


@bp.errorhandler(ProgrammeError)
def _programme_error(exc: ProgrammeError):
    from controller.errors import error_response

    return error_response(422, exc.code, exc.message, exc.message_vi)


def _audited(values: dict) -> dict:
    """What the audit log keeps of an item: the validated values (never the request body), as JSON types."""
    return {k: (sorted(v) if isinstance(v, (set, frozenset)) else v) for k, v in values.items()
            if isinstance(v, (str, int, float, bool, type(None), set, frozenset, list))}


def _answer(row: ProgrammeItem, placement: Placement | None) -> dict:
    """An item and, once it is in the programme, where its next occurrence starts (``placed_at``) and
    ``notice`` / ``notice_vi`` when that is not the plain answer (its session is on air)."""
    out: dict[str, Any] = {"item": item_json(row)}
    if placement is not None and row.status == "approved":
        out.update(placed_at=placement.start_ms, notice=placement.notice, notice_vi=placement.notice_vi)
    return out


@bp.post("/programme/items")
@require("operator")
def create_item(principal):
    """Create an item; it stays a draft unless its creator may approve it (and the area allows that).

    Refused with 422 when none of its occurrences can still start (``schedule.in_past``) or its
    session is on air without room for it (``schedule.session_full``); a draft is held to the same
    test, as if approved now, since waiting only makes it harder to pass."""
    data = json_body()
    db = get_db()
    now = now_ms()
    values = _parse(principal, db, data, now)
    row = ProgrammeItem(**values, status="draft", created_by=principal.id, created_ms=now)
    db.add(row)
    db.flush()
    placement = svc_programme.place(db, row, now, now, current_app.config["TIMEZONE"])
    audit(db, principal.id, "create", "programme_item", row.id, _audited(values))
    owner = area_or_404(row.area_id)
    if svc_programme.can_approve(principal, db, row) and not owner.require_distinct_approver:
        row.status, row.approved_by, row.approved_ms = "approved", principal.id, now
        audit(db, principal.id, "approve", "programme_item", row.id, {"auto": True})
    db.commit()
    _changed()
    return jsonify(_answer(row, placement)), 201


def _item_in_scope(principal, item_id: int) -> ProgrammeItem:
    db = get_db()
    row = db.get(ProgrammeItem, item_id)
    if row is None or row.status not in LIVE_STATUSES or not principal.may_touch(db, row.area_id):
        raise ApiError(404, "item.not_found", f"no programme item {item_id}", "Không tìm thấy mục trong lịch.")
    return row


@bp.get("/programme/items")
@require("viewer")
def list_items(principal):
    """Items of the visible areas (``?area=`` narrows, ``?status=draft`` filters)."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    if request.args.get("area"):
        visible &= areas.subtree_ids(db, check_area(principal, request.args["area"]).id)
    q = select(ProgrammeItem).where(ProgrammeItem.area_id.in_(visible), ProgrammeItem.status.in_(LIVE_STATUSES))
    if request.args.get("status") in LIVE_STATUSES:
        q = q.where(ProgrammeItem.status == request.args["status"])
    rows = db.scalars(q.order_by(ProgrammeItem.id.desc()).limit(500))
    return jsonify({"items": [item_json(p) for p in rows]})


@bp.get("/programme/items/<int:item_id>")
@require("viewer")
def get_item(principal, item_id: int):
    """One item."""
    return jsonify({"item": item_json(_item_in_scope(principal, item_id))})


PLACEMENT_COLUMNS = ("area_id", "targets", "session_key", "at_s", "mode", "day", "weekdays", "date_from",
                     "date_to")
"""The columns that say where and when an item plays: changing one places it anew, from now."""


@bp.patch("/programme/items/<int:item_id>")
@require("operator")
def update_item(principal, item_id: int):
    """Change an item; a changed approved item goes back to draft unless its editor may approve it.

    An approved item that stays approved keeps its place while where and when it plays do not change
    (an occurrence under way or played goes on as it was); a new placement counts from now and is held
    to the same tests as a new item."""
    data = json_body()
    db = get_db()
    row = _item_in_scope(principal, item_id)
    now = now_ms()
    merged = {**_row_input(row), **data}
    if any(k in data for k in ("session", "at", "start", "start_ms")):
        for k in ("session", "at", "start", "start_ms"):
            if k not in data:
                merged.pop(k, None)
    values = _parse(principal, db, merged, now)
    before = {k: getattr(row, k) for k in PLACEMENT_COLUMNS}
    was_approved, since = row.status == "approved", row.approved_ms
    for key, value in values.items():
        setattr(row, key, value)
    moved = any(getattr(row, k) != v for k, v in before.items())
    audit(db, principal.id, "update", "programme_item", row.id, _audited(values))
    owner = area_or_404(row.area_id)
    placement = None
    if svc_programme.can_approve(principal, db, row) and not owner.require_distinct_approver:
        keep = was_approved and since is not None and not moved
        if not keep:
            since = now
            placement = svc_programme.place(db, row, since, now, current_app.config["TIMEZONE"])
        row.status, row.approved_by, row.approved_ms = "approved", principal.id, since
    else:
        if moved:
            svc_programme.place(db, row, now, now, current_app.config["TIMEZONE"])  # can it still play at all?
        row.status, row.approved_by, row.approved_ms = "draft", None, None
    db.commit()
    _changed()
    return jsonify(_answer(row, placement))


@bp.delete("/programme/items/<int:item_id>")
@require("operator")
def delete_item(principal, item_id: int):
    """Remove an item from the programme (kept in the audit log)."""
    db = get_db()
    row = _item_in_scope(principal, item_id)
    if not all(principal.may_touch(db, t) for t in svc_programme.targets_of(row)):
        raise FORBIDDEN  # it also plays in an area outside the caller's: not theirs alone to remove
    row.status = "deleted"
    audit(db, principal.id, "delete", "programme_item", row.id)
    db.commit()
    _changed()
    return "", 204


@bp.post("/programme/items/<int:item_id>/approve")
@require("approver")
def approve_item(principal, item_id: int):
    """Approve a draft: from now on it enters the manifests (422 ``schedule.in_past`` when none of its
    occurrences can still start, ``schedule.session_full`` when its session on air has no room)."""
    return _decide(principal, item_id, True)


@bp.post("/programme/items/<int:item_id>/reject")
@require("approver")
def reject_item(principal, item_id: int):
    """Reject an item (with an optional ``reason``); it leaves the manifests."""
    return _decide(principal, item_id, False)


def _decide(principal, item_id: int, approve: bool):
    db = get_db()
    row = _item_in_scope(principal, item_id)
    reason = str(json_body(optional=True).get("reason", ""))
    try:
        placement = svc_programme.decide(db, principal, row, approve, reason, tz_name=current_app.config["TIMEZONE"])
    except svc_programme.ApprovalRefused as exc:
        raise ApiError(403, exc.code, exc.message, exc.message_vi) from exc
    db.commit()
    _changed()
    return jsonify(_answer(row, placement))


# ---- sessions --------------------------------------------------------------------------------------


def _session_json(t: SessionTemplate) -> dict:
    return {"key": t.key, "name": t.name, "start": t.start.strftime("%H:%M"), "end": t.end.strftime("%H:%M"),
            "weekdays": sorted(t.weekdays)}


@bp.get("/areas/<path:area_id>/sessions")
@require("viewer")
def get_sessions(principal, area_id: str):
    """The area's sessions (its own or its level's defaults) and its extra sessions to come."""
    db = get_db()
    area = check_area(principal, area_id)
    own = db.scalars(select(SessionTemplateRow).where(SessionTemplateRow.area_id == area.id)).first() is not None
    today = _today(_tz()).isoformat()
    extras = db.scalars(select(ExtraSessionRow).where(ExtraSessionRow.area_id == area.id, ExtraSessionRow.day >= today)
                        .order_by(ExtraSessionRow.day, ExtraSessionRow.start_s)).all()
    return jsonify({
        "area": area.id, "source": "area" if own else f"{area.level} default",
        "sessions": [_session_json(t) for t in templates_of(db, area)],
        "extra": [{"id": x.id, "date": x.day, "key": x.key, "name": x.name,
                   "start": seconds_to_time(x.start_s).strftime("%H:%M"),
                   "end": seconds_to_time(x.end_s).strftime("%H:%M")} for x in extras],
    })


def _template_from(raw: Any) -> SessionTemplate:
    if not isinstance(raw, dict) or not raw.get("key") or not raw.get("name"):
        raise ApiError(400, "session.bad_field", "each session needs key, name, start, end",
                       "Mỗi buổi phát cần mã, tên, giờ bắt đầu và kết thúc.")
    days = raw.get("weekdays", [0, 1, 2, 3, 4, 5])
    if not isinstance(days, list) or not all(isinstance(d, int) and 0 <= d <= 6 for d in days):
        raise ApiError(400, "session.bad_weekday", "weekdays are 0-6", "Thứ trong tuần không hợp lệ.")
    start: Any = raw.get("start")  # JSON of any type: parse_hhmm refuses what is not HH:MM
    end: Any = raw.get("end")
    return SessionTemplate(str(raw["key"])[:40], str(raw["name"])[:100], parse_hhmm(start), parse_hhmm(end),
                           frozenset(days))


@bp.put("/areas/<path:area_id>/sessions")
@require("manager")
def put_sessions(principal, area_id: str):
    """Replace the area's own session templates (an empty list restores the level defaults)."""
    db = get_db()
    area = check_area(principal, area_id)
    data = json_body(message='body must be {"sessions": [...]}')
    if not isinstance(data.get("sessions"), list):
        raise ApiError(400, "request.not_json", "body must be {\"sessions\": [...]}", "Dữ liệu gửi lên không hợp lệ.")
    templates = [_template_from(s) for s in data["sessions"]]
    validate_sessions(templates)
    for old in db.scalars(select(SessionTemplateRow).where(SessionTemplateRow.area_id == area.id)):
        db.delete(old)
    db.flush()
    for t in templates:
        db.add(SessionTemplateRow(area_id=area.id, key=t.key, name=t.name, start_s=time_to_seconds(t.start),
                                  end_s=time_to_seconds(t.end), weekdays=weekdays_to_mask(t.weekdays)))
    audit(db, principal.id, "set_sessions", "area", area.id,
          {"sessions": [{"key": t.key, "name": t.name, "start": t.start.isoformat(timespec="minutes"),
                         "end": t.end.isoformat(timespec="minutes"), "weekdays": sorted(t.weekdays)}
                        for t in templates]})
    db.commit()
    _changed()
    return get_sessions.__wrapped__(principal, area_id)


@bp.post("/areas/<path:area_id>/extra-sessions")
@require("operator")
def add_extra_session(principal, area_id: str):
    """Add a session for one day (storm season): ``{date, key, name, start, end}``."""
    db = get_db()
    area = check_area(principal, area_id)
    data = json_body(optional=True)
    day = parse_date(data.get("date"), "date")
    if day is None:
        raise ApiError(400, "request.bad_date", "date is required", "Cần chọn ngày.")
    if day < _today(_tz()):
        raise ApiError(422, "session.in_past", "the day has passed", "Ngày đã qua.")
    t = _template_from({**data, "weekdays": [day.weekday()]})
    same_day: list[SessionTemplate | ExtraSession] = [s for s in templates_of(db, area) if day.weekday() in s.weekdays]
    same_day += [ExtraSession(area.id, day, x.key, x.name, seconds_to_time(x.start_s), seconds_to_time(x.end_s))
                 for x in db.scalars(select(ExtraSessionRow).where(ExtraSessionRow.area_id == area.id,
                                                                   ExtraSessionRow.day == day.isoformat()))]
    validate_sessions([*[SessionTemplate(s.key, s.name, s.start, s.end) for s in same_day],
                       SessionTemplate(t.key, t.name, t.start, t.end)])
    row = ExtraSessionRow(area_id=area.id, day=day.isoformat(), key=t.key, name=t.name,
                          start_s=time_to_seconds(t.start), end_s=time_to_seconds(t.end))
    db.add(row)
    db.flush()
    audit(db, principal.id, "add_extra_session", "area", area.id,
          {"id": row.id, "date": row.day, "key": row.key, "name": row.name, "start_s": row.start_s, "end_s": row.end_s})
    db.commit()
    _changed()
    return jsonify({"extra": {"id": row.id, "date": row.day, "key": row.key}}), 201


@bp.delete("/areas/<path:area_id>/extra-sessions/<int:extra_id>")
@require("operator")
def delete_extra_session(principal, area_id: str, extra_id: int):
    """Remove an extra session."""
    db = get_db()
    area = check_area(principal, area_id)
    row = db.get(ExtraSessionRow, extra_id)
    if row is None or row.area_id != area.id:
        raise ApiError(404, "session.not_found", "no such extra session", "Không tìm thấy buổi phát bổ sung.")
    db.delete(row)
    audit(db, principal.id, "delete_extra_session", "area", area.id, {"id": extra_id})
    db.commit()
    _changed()
    return "", 204


@bp.get("/areas/<path:area_id>/timeline")
@require("viewer")
def get_timeline(principal, area_id: str):
    """Day or week timeline (``?date=YYYY-MM-DD&days=1..7``)."""
    db = get_db()
    area = check_area(principal, area_id)
    tz = _tz()
    first = parse_date(request.args.get("date"), "date") or _today(tz)
    try:
        days = int(request.args.get("days", "1"))
    except ValueError:
        days = 0
    if not 1 <= days <= 7:
        raise ApiError(400, "request.bad_days", "days must be 1-7", "Số ngày phải từ 1 đến 7.")
    return jsonify(timeline(db, area, first, days, tz))


def _audit_line_visible(db: Session, visible: set[str], r: AuditEntry) -> bool:
    """True when the object of an audit line lies in ``visible`` (lines of other kinds: the root only)."""
    if r.object_type == "programme_item":
        item = db.get(ProgrammeItem, int(r.object_id))
        return item is not None and item.area_id in visible
    if r.object_type == "area":
        return r.object_id in visible
    if r.object_type == "receiver":
        rx = db.get(Receiver, r.object_id)
        return rx is not None and rx.area_id in visible
    if r.object_type == "api_token":
        token = db.get(ApiToken, int(r.object_id))
        user = db.get(User, token.user_id) if token is not None else None
        return user is not None and user.area_id in visible  # a root user's token: the root only
    if r.object_type == "user":
        user = db.get(User, int(r.object_id))
        return user is not None and user.area_id in visible  # a root user: the root only
    return False


@bp.get("/audit")
@require("manager")
def get_audit(principal):
    """The newest audit entries (``?object_id=`` narrows) whose object lies within the caller's areas."""
    db = get_db()
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(200)
    if request.args.get("object_id"):
        q = q.where(AuditEntry.object_id == request.args["object_id"])
    rows = db.scalars(q).all()
    visible = areas.subtree_ids(db, principal.area_id)
    out = []
    for r in rows:
        if principal.area_id is not None and not _audit_line_visible(db, visible, r):
            continue
        out.append({"id": r.id, "ts_ms": r.ts_ms, "user_id": r.user_id, "action": r.action,
                    "object_type": r.object_type, "object_id": r.object_id,
                    "detail": json.loads(r.detail) if r.detail else None})
    return jsonify({"audit": out})

