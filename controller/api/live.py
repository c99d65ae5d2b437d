"""Live voice (nói trực tiếp): start a session, post the microphone's slices, stop.

``POST /api/v1/live`` takes what an alert takes (``mode``, ``areas`` / ``receivers``, ``volume``,
``until_ms``, ``if_running`` = ``replace`` only: a person speaking cannot wait in a queue) plus the
recorder's ``mime_type``; it answers 202 with the alert, which is sent once the first slices
made the Icecast mount appear. ``POST /api/v1/live/<id>/audio?seq=N`` takes slice N (raw bytes,
in order, from the person who started it); ``POST /api/v1/live/<id>/stop`` ends it everywhere.
"""

from __future__ import annotations

import threading

from flask import current_app, jsonify, request

from audio.live import LiveError
from controller import auth
from controller.api import bp, json_body, require
from controller.api.alerts import _alert_in_scope, _commanded
from controller.db import get_db
from controller.errors import ApiError
from controller.runtime import services
from controller.services import emergencies as em
from controller.services.live import LiveVoice, Session
from schedules.events import now_ms

MAX_SLICE_BYTES = 64 * 1024
"""A 250 ms slice of Opus is about 1-2 KB; anything near this is not a microphone's."""


def _live() -> tuple[LiveVoice, em.Emergencies]:
    svc = services()
    if svc is None or not svc.live.available:
        reason = svc.live.reason_unavailable if svc is not None else "the live service is not running"
        raise ApiError(503, "live.unavailable", reason or "no Icecast for live voice",
                       "Máy chủ chưa có dịch vụ phát trực tiếp (Icecast); hãy dùng bản tin thu sẵn.")
    return svc.live, svc.emergencies


@bp.post("/live")
@require("operator")
def start_live(principal):
    """Open a live-voice session to areas or clusters: the alert is sent when the first audio arrives."""
    data = json_body()
    db = get_db()
    mime_type = str(data.get("mime_type") or "audio/webm")[:100]
    if data.get("if_running") == "queue":
        raise ApiError(400, "live.no_queue", "a live voice cannot wait in a queue: replace, or wait and start again",
                       "Không thể xếp hàng khi nói trực tiếp: hãy chọn thay thế, hoặc chờ rồi bắt đầu lại.")
    body = {k: v for k, v in data.items() if k != "mime_type"}
    body["content"] = {"kind": "live"}
    body["chime"], body["repeat"] = False, 1
    req = em.parse_request(db, principal, body, config=current_app.config, now=now_ms())
    live, worker = _live()
    if req.mode == "live" and em.needs_confirm(db, req.targets):
        raise ApiError(409, "live.needs_confirm", "live voice cannot wait for a second person's confirmation",
                       "Địa bàn này cần người thứ hai xác nhận bản tin khẩn cấp: không thể nói trực tiếp; "
                       "hãy thu âm thành bản tin rồi phát.")
    alert, replaced = em.create(db, principal, req, now=now_ms())
    alert.stream_url = live.listen_url_for(alert.id)
    try:
        live.open(alert.id, principal.id, mime_type)
    except LiveError as exc:
        db.rollback()
        raise ApiError(503, exc.code, exc.message, exc.message_vi) from exc
    db.commit()
    worker.advance(alert.id, [a.id for a in replaced], by=principal.id)
    db.refresh(alert)
    return jsonify({"alert": em.alert_json(alert), "audio": f"/api/v1/live/{alert.id}/audio"}), 202


def _when_mount_ready(app, live: LiveVoice, worker: em.Emergencies, session: Session) -> None:
    """Background: wait until Icecast serves the mount, then send the alert (or end it when it never came)."""
    if live.mount_ready(session):
        session.live = True
        worker.go_live(session.alert_id)
        return
    with app.app_context():
        worker.end(session.alert_id, "source_failed")


@bp.post("/live/<alert_id>/audio")
@require("operator")
def live_audio(principal: auth.Principal, alert_id: str):
    """Slice ``seq`` of the microphone's recording (raw bytes as MediaRecorder made them)."""
    alert = _alert_in_scope(principal, alert_id)
    live, worker = _live()
    session = live.sessions.get(alert.id)
    if session is None:
        raise ApiError(409, "live.no_session", "the live session has ended", "Phiên nói trực tiếp đã kết thúc.")
    if session.user_id != principal.id:
        raise ApiError(403, "live.not_yours", "only the person who started it may speak in a live session",
                       "Chỉ người bắt đầu phiên mới được nói trong phiên này.")
    try:
        seq = int(request.args.get("seq", ""))
    except ValueError as exc:
        raise ApiError(400, "live.bad_seq", "seq: the slice's number from 0", "Số thứ tự đoạn âm thanh không hợp lệ.") \
            from exc
    chunk = request.get_data(cache=False)
    if len(chunk) > MAX_SLICE_BYTES:
        raise ApiError(413, "request.too_large", f"a slice is at most {MAX_SLICE_BYTES} bytes",
                       "Đoạn âm thanh quá lớn.")
    first = session.next_seq == 0
    try:
        live.feed(alert.id, seq, chunk)
    except LiveError as exc:
        status = 409 if exc.code in ("live.out_of_order", "live.no_session", "live.closed") else 503
        if exc.code in ("live.encoder_gone", "live.backlog"):
            worker.end(alert.id, "source_failed")
        raise ApiError(status, exc.code, exc.message, exc.message_vi) from exc
    if first:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        threading.Thread(target=_when_mount_ready, args=(app, live, worker, session), daemon=True,
                         name=f"live-ready-{alert.id}").start()
    return jsonify({"seq": seq, "live": session.live, "status": alert.status})


@bp.post("/live/<alert_id>/stop")
@require("operator")
def stop_live(principal, alert_id: str):
    """The speaker is done: the alert ends everywhere and the session closes."""
    alert = _commanded(principal, alert_id)
    _live()[1].end(alert.id, "stopped", by=principal.id)
    get_db().expire_all()
    return jsonify({"alert": em.alert_json(_alert_in_scope(principal, alert_id))})
