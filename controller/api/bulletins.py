"""Bulletins: upload, text to speech (and its preview), list, processing state."""

from __future__ import annotations

import json

from flask import Response, current_app, jsonify, request
from sqlalchemy import select

from audio import pipeline, tts
from audio.errors import AudioError
from controller.api import bp, bulletin_in_scope, check_area, json_body, require
from controller.db import get_db
from controller.errors import ApiError
from controller.models import Bulletin, ProgrammeItem
from controller.runtime import services
from controller.services import areas
from controller.services.catalogue import Catalogue, TtsRequest
from controller.services.programme import can_approve
from schedules.events import now_ms


def bulletin_json(b: Bulletin, *, peaks: bool = False) -> dict:
    """API view of a bulletin: its job state (queued, processing with percent, ready, failed), media, and
    ``warning`` {code, message, message_vi} when it was accepted with a reservation (``audio.truncated``)."""
    media = None
    if b.media:
        media = {"sha256": b.media.sha256, "duration_ms": b.media.duration_ms, "bytes": b.media.bytes,
                 "format": b.media.format, "url": f"/media/{b.media.sha256}.{b.media.format}",
                 "loudness_lufs": b.media.loudness_lufs, "true_peak_db": b.media.true_peak_db}
        if peaks:
            media["peaks"] = json.loads(b.media.peaks) if b.media.peaks else []
    return {
        "id": b.id,
        "title": b.title,
        "kind": b.kind,
        "area": b.area_id,
        "status": b.status,
        "progress": 100 if b.status == "ready" else (b.progress or 0),
        "error": {"code": b.error_code, "message": b.error_message,
                  "message_vi": b.error_message_vi or b.error_message} if b.error_code else None,
        "warning": {"code": b.warning_code, "message": b.warning_message,
                    "message_vi": b.warning_message_vi or b.warning_message} if b.warning_code else None,
        "source": {"name": b.source_name, "loudness_lufs": b.loudness_in_lufs, "peak_db": b.peak_in_db},
        "tts": {"engine": b.tts_engine, "voice": b.tts_voice, "text": b.text} if b.kind == "text" else None,
        "media": media,
        "created_ms": b.created_ms,
        "updated_ms": b.updated_ms,
    }


def _title(value) -> str:
    title = (value or "").strip() if isinstance(value, str) else ""
    if not title or len(title) > 300:
        raise ApiError(400, "bulletin.bad_title", "title is required (at most 300 characters)",
                       "Cần nhập tiêu đề (tối đa 300 ký tự).")
    return title


def _tts_request(body: dict) -> TtsRequest:
    """Validate the JSON of a text bulletin or preview."""
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "tts.empty", "text is required", "Chưa nhập nội dung cần đọc.")
    limit = int(current_app.config["TTS_MAX_CHARS"])
    if len(text) > limit:
        raise ApiError(400, "tts.too_long", f"the text has {len(text)} characters, over {limit}",
                       f"Văn bản dài quá {limit} ký tự.")
    engine = body.get("engine") or None
    if engine is not None and engine not in tts.ENGINES:
        raise ApiError(400, "tts.bad_engine", f"engine must be one of {', '.join(tts.ENGINES)}",
                       "Bộ đọc không hợp lệ.")
    voice = body.get("voice") or None
    if voice is not None and voice not in tts.ESPEAK_VOICES:
        raise ApiError(400, "tts.bad_voice", f"voice must be one of {', '.join(tts.ESPEAK_VOICES)}",
                       "Giọng đọc không hợp lệ.")
    try:
        repeat = int(body.get("repeat", 1))
        gap = float(body.get("repeat_gap_s", 3))
    except (TypeError, ValueError):
        repeat, gap = 0, -1.0
    if not 1 <= repeat <= 10 or not 0 <= gap <= 60:
        raise ApiError(400, "tts.bad_repeat", "repeat must be 1-10 and repeat_gap_s 0-60",
                       "Số lần lặp phải từ 1 đến 10, khoảng nghỉ từ 0 đến 60 giây.")
    jingles = {}
    for key in ("intro", "outro"):
        value = body.get(key) or None
        if value is not None and (not isinstance(value, str) or len(value) != 64
                                  or any(c not in "0123456789abcdef" for c in value)):
            raise ApiError(400, "tts.bad_jingle", f"{key} must be the sha256 of a stored media file",
                           "Nhạc hiệu không hợp lệ.")
        jingles[key] = value
    return TtsRequest(text=text, engine=engine, voice=voice, repeat=repeat, repeat_gap_s=gap, **jingles)


def _catalogue() -> Catalogue:
    """The running app's catalogue (its services are attached by the app factory)."""
    svc = services()
    if svc is None:
        raise RuntimeError("no services on this app: create it with controller.create_app")
    return svc.catalogue


@bp.post("/bulletins/tts")
@require("operator")
def create_text_bulletin(principal):
    """A text bulletin: JSON ``{title, area, text, engine?, voice?, repeat?, repeat_gap_s?, intro?, outro?}``.

    The text is normalised and spoken in the worker pool, then goes through the
    same loudness normalisation as uploads; the engine that spoke is recorded.
    """
    body = json_body(code="request.bad_json", message="a JSON object is required")
    title = _title(body.get("title"))
    area = check_area(principal, str(body.get("area") or principal.area_id or "").strip())
    req = _tts_request(body)
    db = get_db()
    bulletin = Bulletin(title=title, kind="text", area_id=area.id, status="queued", text=req.text,
                        tts_voice=req.voice, created_by=principal.id, created_ms=now_ms(), updated_ms=now_ms())
    db.add(bulletin)
    db.commit()
    _catalogue().submit_tts(bulletin.id, req)
    return jsonify({"bulletin": bulletin_json(bulletin)}), 202


@bp.post("/bulletins/tts/preview")
@require("operator")
def preview_text_bulletin(principal):
    """Listen before saving: the same JSON as a text bulletin; answers the rendered audio, stores nothing.

    Headers ``X-Loaxa-TTS-Engine`` and ``X-Loaxa-TTS-Voice`` name what spoke.
    """
    body = json_body(code="request.bad_json", message="a JSON object is required")
    check_area(principal, str(body.get("area") or principal.area_id or "").strip())
    result = _catalogue().preview(_tts_request(body))
    resp = Response(result.data, mimetype=result.mimetype)
    resp.headers["X-Loaxa-TTS-Engine"] = result.engine
    resp.headers["X-Loaxa-TTS-Voice"] = result.voice
    resp.headers["X-Loaxa-Duration-Ms"] = str(result.duration_ms)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/tts/engines")
@require("viewer")
def tts_engines(principal):
    """Text-to-speech engines usable now, in the order they are tried, and the offline voices."""
    settings = _catalogue().tts_settings
    return jsonify({"engines": tts.available(settings), "voices": list(tts.ESPEAK_VOICES),
                    "default_voice": settings.espeak_voice})


@bp.post("/bulletins")
@require("operator")
def upload_bulletin(principal):
    """Upload an audio file (multipart ``file``, ``title``, ``area``); it is transcoded in the background.

    A file name whose extension is not an accepted audio or video type is refused (415
    ``upload.unsupported_type``) before the upload is stored.
    """
    title = (request.form.get("title") or "").strip()
    area_id = (request.form.get("area") or principal.area_id or "").strip()
    upload = request.files.get("file")
    if upload is None:
        raise ApiError(400, "upload.missing_file", "multipart field 'file' is required", "Chưa chọn tệp âm thanh.")
    title = _title(title)
    area = check_area(principal, area_id)
    catalogue = _catalogue()
    name = (upload.filename or "")[-300:].replace("\x00", "")
    try:
        pipeline.check_extension(name)
        path = catalogue.save_upload(upload.stream, int(current_app.config["MAX_UPLOAD_BYTES"]))
    except AudioError as exc:
        if exc.code != "upload.unsupported_type":
            raise
        raise ApiError(415, exc.code, exc.message, exc.message_vi) from exc
    finally:
        upload.close()
    catalogue.check_upload(path, name)
    db = get_db()
    bulletin = Bulletin(title=title, kind="audio", area_id=area.id, status="queued",
                        source_name=name, created_by=principal.id, created_ms=now_ms(), updated_ms=now_ms())
    db.add(bulletin)
    db.commit()
    catalogue.submit(bulletin.id, path, name)
    return jsonify({"bulletin": bulletin_json(bulletin)}), 202


@bp.get("/bulletins")
@require("viewer")
def list_bulletins(principal):
    """Bulletins of the areas this user may see, newest first, each with its drafts awaiting approval.

    ``pending`` lists the draft programme items that play the bulletin (in the caller's areas), with
    ``can_decide`` when this user may approve or reject them.
    """
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    rows = db.scalars(select(Bulletin).where(Bulletin.area_id.in_(visible)).order_by(Bulletin.id.desc())
                      .limit(200)).all()
    pending: dict[int, list[dict]] = {}
    drafts = db.scalars(select(ProgrammeItem).where(ProgrammeItem.status == "draft",
                                                    ProgrammeItem.bulletin_id.in_([b.id for b in rows]),
                                                    ProgrammeItem.area_id.in_(visible)).order_by(ProgrammeItem.id))
    for item in drafts:
        if item.bulletin_id is None:  # not so: the WHERE chose items of these bulletins
            continue
        pending.setdefault(item.bulletin_id, []).append(
            {"id": item.id, "area": item.area_id, "session": item.session_key, "day": item.day, "mode": item.mode,
             "can_decide": can_approve(principal, db, item)})
    return jsonify({"bulletins": [bulletin_json(b) | {"pending": pending.get(b.id, [])} for b in rows]})


@bp.app_template_global("bulletin_warnings")
def bulletin_warnings(principal) -> list[Bulletin]:
    """For the bulletins page: the bulletins in this user's areas that carry a warning, newest first
    (the same 200 the list shows). The page shows their messages as data, escaped."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    newest = (select(Bulletin.id).where(Bulletin.area_id.in_(visible)).order_by(Bulletin.id.desc()).limit(200)
              .subquery())
    return list(db.scalars(select(Bulletin).where(Bulletin.id.in_(select(newest.c.id)),
                                                  Bulletin.warning_code.is_not(None)).order_by(Bulletin.id.desc())))


@bp.get("/bulletins/<int:bulletin_id>")
@require("viewer")
def get_bulletin(principal, bulletin_id: int):
    """One bulletin with its processing state."""
    return jsonify({"bulletin": bulletin_json(bulletin_in_scope(principal, bulletin_id), peaks=True)})
