"""JSON API under /api/v1 (Basic auth; no cookies, hence no CSRF surface)."""

from __future__ import annotations

import json
from datetime import datetime
from functools import wraps
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from audio.errors import AudioError
from controller import auth
from controller.db import get_db
from controller.errors import FORBIDDEN, UNAUTHORIZED, ApiError, error_response
from controller.models import Area, Bulletin, Event, ProgrammeItem, Receiver
from controller.openapi import OPENAPI
from controller.runtime import services
from controller.services import areas
from controller.services.dispatch import item_wire_id
from schedules.events import now_ms
from schedules.manifest import PRIORITIES

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_SCHEDULE_AHEAD_MS = 400 * 24 * 3600 * 1000


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, exc.message_vi)


@bp.errorhandler(AudioError)
def _audio_error(exc: AudioError):
    status = 413 if exc.code == "upload.too_large" else 422
    return error_response(status, exc.code, exc.message, exc.message_vi)


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc):
    limit = current_app.config["MAX_UPLOAD_BYTES"]
    return error_response(413, "upload.too_large", f"the upload exceeds {limit} bytes",
                          f"Tệp lớn hơn giới hạn {limit // (1024 * 1024)} MB.")


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    return error_response(exc.code or 500, f"http.{exc.code}", exc.description or exc.name, exc.name)


def require(role: str):
    """Decorator: the caller must be authenticated with at least ``role``."""

    def wrap(view):
        @wraps(view)
        def inner(*args, **kwargs):
            principal = auth.api_principal()
            if principal is None:
                resp = error_response(401, UNAUTHORIZED.code, UNAUTHORIZED.message, UNAUTHORIZED.message_vi)
                resp.headers["WWW-Authenticate"] = 'Basic realm="loaxa"'
                return resp
            if not principal.at_least(role):
                raise FORBIDDEN
            return view(principal, *args, **kwargs)

        return inner

    return wrap


def _area_or_404(area_id: str) -> Area:
    area = get_db().get(Area, area_id)
    if area is None:
        raise ApiError(404, "area.not_found", f"no area {area_id!r}", "Không tìm thấy địa bàn.")
    return area


def _check_area(principal: auth.Principal, area_id: str) -> Area:
    area = _area_or_404(area_id)
    if not principal.may_touch(get_db(), area.id):
        # Same answer as a missing area: do not reveal other communes' ids.
        raise ApiError(404, "area.not_found", f"no area {area_id!r}", "Không tìm thấy địa bàn.")
    return area


@bp.get("/openapi.json")
def openapi():
    """The OpenAPI description of this API."""
    return jsonify(OPENAPI)


@bp.get("/health")
def health():
    """Liveness: database reachable and whether the broker link is up."""
    get_db().execute(select(1))
    svc = services()
    return jsonify({"ok": True, "mqtt": bool(svc and svc.link and svc.link.connected.is_set())})


@bp.get("/areas")
@require("viewer")
def list_areas(principal):
    """The areas this user may see."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    rows = db.scalars(select(Area).where(Area.id.in_(visible)).order_by(Area.id)).all()
    return jsonify({"areas": [{"id": a.id, "name": a.name, "level": a.level, "parent": a.parent_id} for a in rows]})


def bulletin_json(b: Bulletin) -> dict:
    """API view of a bulletin."""
    return {
        "id": b.id,
        "title": b.title,
        "area": b.area_id,
        "status": b.status,
        "error": {"code": b.error_code, "message": b.error_message} if b.error_code else None,
        "media": {"sha256": b.media.sha256, "duration_ms": b.media.duration_ms, "bytes": b.media.bytes,
                  "url": f"/media/{b.media.sha256}.{b.media.format}"} if b.media else None,
        "created_ms": b.created_ms,
    }


@bp.post("/bulletins")
@require("operator")
def upload_bulletin(principal):
    """Upload an audio file (multipart ``file``, ``title``, ``area``); it is transcoded in the background."""
    title = (request.form.get("title") or "").strip()
    area_id = (request.form.get("area") or principal.area_id or "").strip()
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(400, "upload.missing_file", "multipart field 'file' is required", "Chưa chọn tệp âm thanh.")
    if not title or len(title) > 300:
        raise ApiError(400, "bulletin.bad_title", "title is required (at most 300 characters)",
                       "Cần nhập tiêu đề (tối đa 300 ký tự).")
    area = _check_area(principal, area_id)
    svc = services()
    try:
        path = svc.catalogue.save_upload(upload.stream, int(current_app.config["MAX_UPLOAD_BYTES"]))
    finally:
        upload.close()
    svc.catalogue.check_upload(path)
    db = get_db()
    bulletin = Bulletin(title=title, kind="audio", area_id=area.id, status="queued",
                        source_name=(upload.filename or "")[-300:].replace("\x00", ""),
                        created_by=principal.id, created_ms=now_ms())
    db.add(bulletin)
    db.commit()
    svc.catalogue.submit(bulletin.id, path)
    return jsonify({"bulletin": bulletin_json(bulletin)}), 202


@bp.get("/bulletins")
@require("viewer")
def list_bulletins(principal):
    """Bulletins of the areas this user may see, newest first."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    rows = db.scalars(select(Bulletin).where(Bulletin.area_id.in_(visible)).order_by(Bulletin.id.desc()).limit(200))
    return jsonify({"bulletins": [bulletin_json(b) for b in rows]})


def _bulletin_in_scope(principal, bulletin_id: int) -> Bulletin:
    db = get_db()
    b = db.get(Bulletin, bulletin_id)
    if b is None or not principal.may_touch(db, b.area_id):
        raise ApiError(404, "bulletin.not_found", f"no bulletin {bulletin_id}", "Không tìm thấy bản tin.")
    return b


@bp.get("/bulletins/<int:bulletin_id>")
@require("viewer")
def get_bulletin(principal, bulletin_id: int):
    """One bulletin with its processing state."""
    return jsonify({"bulletin": bulletin_json(_bulletin_in_scope(principal, bulletin_id))})


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
    bulletin = _bulletin_in_scope(principal, _int_field(data, "bulletin_id"))
    if bulletin.status != "ready" or bulletin.media is None:
        raise ApiError(409, "bulletin.not_ready", f"bulletin is {bulletin.status}, not ready",
                       "Bản tin chưa xử lý xong, chưa thể xếp lịch.")
    area = _check_area(principal, str(data.get("area") or bulletin.area_id))
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


def receiver_json(rx: Receiver, detail: bool = False) -> dict:
    """API view of a receiver; ``detail`` adds the last heartbeat and recent events."""
    out = {"id": rx.id, "name": rx.name, "area": rx.area_id, "online": rx.online,
           "last_seen_ms": rx.last_seen_ms, "lat": rx.lat, "lon": rx.lon}
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
    """Receivers of the visible areas."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    rows = db.scalars(select(Receiver).where(Receiver.area_id.in_(visible)).order_by(Receiver.id))
    return jsonify({"receivers": [receiver_json(r) for r in rows]})


@bp.get("/receivers/<rx_id>")
@require("viewer")
def get_receiver(principal, rx_id: str):
    """One receiver: status, last heartbeat, recent events and what it played."""
    db = get_db()
    rx = db.get(Receiver, rx_id)
    if rx is None or not principal.may_touch(db, rx.area_id):
        raise ApiError(404, "receiver.not_found", f"no receiver {rx_id!r}", "Không tìm thấy cụm thu.")
    return jsonify({"receiver": receiver_json(rx, detail=True)})
