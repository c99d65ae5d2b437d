"""Bulletins: upload, list, processing state."""

from __future__ import annotations

from flask import current_app, jsonify, request
from sqlalchemy import select

from controller.api import bp, check_area, require
from controller.db import get_db
from controller.errors import ApiError
from controller.models import Bulletin
from controller.runtime import services
from controller.services import areas
from schedules.events import now_ms


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
    area = check_area(principal, area_id)
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


def bulletin_in_scope(principal, bulletin_id: int) -> Bulletin:
    db = get_db()
    b = db.get(Bulletin, bulletin_id)
    if b is None or not principal.may_touch(db, b.area_id):
        raise ApiError(404, "bulletin.not_found", f"no bulletin {bulletin_id}", "Không tìm thấy bản tin.")
    return b


@bp.get("/bulletins/<int:bulletin_id>")
@require("viewer")
def get_bulletin(principal, bulletin_id: int):
    """One bulletin with its processing state."""
    return jsonify({"bulletin": bulletin_json(bulletin_in_scope(principal, bulletin_id))})
