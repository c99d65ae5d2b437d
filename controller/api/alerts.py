"""Emergency broadcasts and drills (phát khẩn cấp, diễn tập), their prepared texts and saved streams.

Only a user who may alert (managers and admins; operators and approvers when granted) and whose
areas hold every target may send, confirm, stop or correct. Reading an alert needs any role whose
areas hold its owner area. See :mod:`controller.services.emergencies` for an alert's life.
"""

from __future__ import annotations

import json

from flask import current_app, jsonify
from sqlalchemy import select

from controller import auth
from controller.api import bp, check_area, json_body, require
from controller.db import get_db
from controller.errors import ApiError
from controller.models import Alert, AlertTemplate, StreamSource
from controller.runtime import services
from controller.services import areas
from controller.services import emergencies as em
from controller.services.programme import audit
from schedules.events import now_ms

_NOT_FOUND = ("alert.not_found", "no such alert", "Không tìm thấy bản tin khẩn cấp.")


def _alert_in_scope(principal: auth.Principal, alert_id: str) -> Alert:
    db = get_db()
    alert = db.get(Alert, alert_id[:40])
    if alert is None or not principal.may_touch(db, alert.area_id):
        raise ApiError(404, *_NOT_FOUND)
    return alert


def _commanded(principal: auth.Principal, alert_id: str) -> Alert:
    """Stop, confirm, correct: the caller may alert (checked first, as a role is), the alert is in their
    areas (else 404), and so is every target of it (else 403)."""
    if not principal.may_alert:
        raise ApiError(403, "alert.forbidden", "you may not send or stop emergency broadcasts",
                       "Bạn không có quyền phát hoặc dừng bản tin khẩn cấp.")
    alert = _alert_in_scope(principal, alert_id)
    db = get_db()
    targets = json.loads(alert.targets)
    try:
        em.resolve_targets(db, principal, targets["areas"], targets["receivers"])
    except ApiError as exc:
        if exc.code != "alert.no_targets":
            raise ApiError(403, "alert.forbidden", "some targets of this alert are outside your areas",
                           "Bản tin này phát tới nơi ngoài địa bàn của bạn.") from exc
    return alert


def _emergencies() -> em.Emergencies:
    svc = services()
    if svc is None or svc.emergencies is None:
        raise ApiError(503, "alert.unavailable", "the alert service is not running",
                       "Dịch vụ phát khẩn cấp chưa chạy.")
    return svc.emergencies


def _status_of(alert: Alert) -> dict:
    return {"alert": em.alert_json(alert), "status": em.live_status(get_db(), alert)}


@bp.get("/alerts")
@require("viewer")
def list_alerts(principal):
    """Alerts whose owner area the caller sees, newest first (``?open=1``: only those not over)."""
    from flask import request

    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    q = select(Alert).where(Alert.area_id.in_(visible)).order_by(Alert.created_ms.desc()).limit(200)
    if request.args.get("open") == "1":
        q = q.where(Alert.status.in_(("awaiting_confirm", "queued", "preparing", "running")))
    return jsonify({"alerts": [em.alert_json(a) for a in db.scalars(q)]})


@bp.post("/alerts/preview")
@require("operator")
def preview_alert(principal):
    """Check a request without sending it: how many clusters it reaches, where, and what would stand in its way."""
    data = json_body()
    db = get_db()
    req = em.parse_request(db, principal, data, config=current_app.config, now=now_ms())
    clash = em.overlapping_open(db, req.targets.rx_ids)
    spoken = req.content_kind in ("text", "template")
    return jsonify({
        "mode": req.mode, "clusters": len(req.targets.rx_ids), "where": req.targets.describe(),
        "scopes": req.targets.scopes, "title": req.title,
        "needs_confirm": req.mode == "live" and em.needs_confirm(db, req.targets),
        "running": [{"id": a.id, "title": a.title, "mode": a.mode, "status": a.status} for a in clash],
        "tts_fallback": spoken and em.tts_would_fall_back(current_app.config),
    })


@bp.post("/alerts")
@require("operator")
def create_alert(principal):
    """Send an emergency (``mode`` live) or a drill to areas or clusters, at once.

    Body: ``{mode, areas?, receivers?, content: {kind: bulletin|text|template|stream, ...}, volume?, chime?,
    repeat?, gap_s?, until_ms?, title?, if_running?: queue|replace}``. 202 with the alert; it is
    ``awaiting_confirm`` when an area asks a second person to confirm live alerts.
    """
    return create_alert_from(principal, json_body())


def create_alert_from(principal: auth.Principal, data: dict):
    """Validate, store and start an alert request (the alert endpoint's and the emergency relay's): 202."""
    content = data.get("content")
    if isinstance(content, dict) and content.get("kind") == "live":
        raise ApiError(400, "alert.use_live", "live voice starts with POST /api/v1/live",
                       "Nói trực tiếp được bắt đầu từ nút nói trực tiếp.")
    db = get_db()
    worker = _emergencies()
    req = em.parse_request(db, principal, data, config=current_app.config, now=now_ms())
    alert, replaced = em.create(db, principal, req, now=now_ms())
    db.commit()
    worker.advance(alert.id, [a.id for a in replaced], by=principal.id)
    db.refresh(alert)
    return jsonify({"alert": em.alert_json(alert)}), 202


@bp.get("/alerts/<alert_id>")
@require("viewer")
def get_alert(principal, alert_id: str):
    """The alert and what each of its clusters did (acknowledged, playing, finished, silent and why)."""
    return jsonify(_status_of(_alert_in_scope(principal, alert_id)))


@bp.post("/alerts/<alert_id>/confirm")
@require("operator")
def confirm_alert(principal, alert_id: str):
    """The second person confirms a live alert that waits for it (never the person who sent it)."""
    alert = _commanded(principal, alert_id)
    if alert.status != "awaiting_confirm":
        raise ApiError(409, "alert.not_waiting", "the alert is not waiting for a confirmation",
                       "Bản tin này không chờ xác nhận.")
    if alert.created_by == principal.id:
        raise ApiError(403, "alert.same_person", "a second person must confirm",
                       "Cần một người khác xác nhận bản tin này.")
    _emergencies().confirm(alert.id, principal)
    get_db().expire_all()
    return jsonify(_status_of(_alert_in_scope(principal, alert_id)))


@bp.post("/alerts/<alert_id>/stop")
@require("operator")
def stop_alert(principal, alert_id: str):
    """Stop it everywhere now (or cancel it before it started): its retained state is cleared."""
    alert = _commanded(principal, alert_id)
    if not _emergencies().end(alert.id, "stopped", by=principal.id):
        raise ApiError(409, "alert.over", "the alert is already over", "Bản tin này đã kết thúc.")
    get_db().expire_all()
    return jsonify(_status_of(_alert_in_scope(principal, alert_id)))


@bp.post("/alerts/<alert_id>/correction")
@require("operator")
def correct_alert(principal, alert_id: str):
    """Stop the alert (if it still runs) and send a correction (thông báo đính chính) to the same targets.

    Body (optional): ``{"text": ...}`` or ``{"template_id": ...}``; by default the area's correction text.
    The correction has the same mode as the alert it corrects: a drill is corrected by a drill.
    """
    data = json_body(optional=True)
    db = get_db()
    alert = _commanded(principal, alert_id)
    if alert.corrects_id is not None:
        raise ApiError(409, "alert.is_correction", "a correction is not corrected again; send a new alert",
                       "Không đính chính một thông báo đính chính; hãy phát bản tin mới.")
    if "text" in data:
        content = {"kind": "text", "text": data["text"]}
    else:
        template_id = data.get("template_id")
        if template_id is None:
            t = em.correction_template(db, alert.area_id)
            if t is None:
                raise ApiError(409, "alert.no_correction_text", "no correction text is prepared",
                               "Chưa có mẫu thông báo đính chính.")
            template_id = t.id
        content = {"kind": "template", "template_id": template_id}
    targets = json.loads(alert.targets)
    request_body = {"mode": alert.mode, "areas": targets["areas"], "receivers": targets["receivers"],
                    "content": content, "volume": alert.volume, "chime": True, "repeat": 2, "gap_s": 2.0,
                    "if_running": "replace", "title": "Đính chính: " + alert.title}
    req = em.parse_request(db, principal, request_body, config=current_app.config, now=now_ms(), corrects=alert)
    worker = _emergencies()
    worker.end(alert.id, "corrected", by=principal.id)
    db.expire_all()
    correction, replaced = em.create(db, principal, req, now=now_ms())
    db.commit()
    worker.advance(correction.id, [a.id for a in replaced], by=principal.id)
    db.refresh(correction)
    return jsonify({"alert": em.alert_json(correction)}), 202


# ---------------------------------------------------------------------------- prepared texts

def _template_json(t: AlertTemplate) -> dict:
    return {"id": t.id, "area": t.area_id, "topic": t.topic, "name": t.name, "text": t.text,
            "updated_ms": t.updated_ms}


def _template_fields(data: dict, t: AlertTemplate) -> None:
    if "name" in data or not t.name:
        name = data.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ApiError(400, "template.bad_name", "name: 1-200 characters", "Tên mẫu cần 1-200 ký tự.")
        t.name = name.strip()
    if "text" in data or not t.text:
        text = data.get("text")
        if not isinstance(text, str) or not text.strip() or len(text) > em.MAX_TEXT:
            raise ApiError(400, "template.bad_text", f"text: 1-{em.MAX_TEXT} characters",
                           f"Nội dung mẫu cần 1-{em.MAX_TEXT} ký tự.")
        t.text = text.strip()
    if "topic" in data or not t.topic:
        topic = data.get("topic", "other")
        if topic not in em.TEMPLATE_TOPICS:
            raise ApiError(400, "template.bad_topic", "topic must be one of " + ", ".join(em.TEMPLATE_TOPICS),
                           "Loại mẫu không hợp lệ.")
        t.topic = topic
    t.updated_ms = now_ms()


@bp.get("/alert-templates")
@require("viewer")
def list_templates(principal):
    """The prepared texts the caller may use (everyone's and their areas' own)."""
    return jsonify({"templates": [_template_json(t) for t in em.templates_for(get_db(), principal)]})


@bp.post("/alert-templates")
@require("manager")
def create_template(principal):
    """An area's own prepared text: ``{area, topic, name, text}``."""
    data = json_body()
    db = get_db()
    area = check_area(principal, str(data.get("area", "")))
    t = AlertTemplate(area_id=area.id, topic="", name="", text="", updated_ms=0)
    _template_fields(data, t)
    db.add(t)
    db.flush()
    audit(db, principal.id, "create_alert_template", "alert_template", t.id, {"area": area.id, "name": t.name})
    db.commit()
    return jsonify({"template": _template_json(t)}), 201


def _own_template(principal: auth.Principal, template_id: int) -> AlertTemplate:
    """An area's template in the caller's areas (everyone's templates are changed by root admins only)."""
    db = get_db()
    t = db.get(AlertTemplate, template_id)
    if t is None or (t.area_id is None and principal.area_id is not None) or \
            (t.area_id is not None and not principal.may_touch(db, t.area_id)):
        raise ApiError(404, "template.not_found", "no such template", "Không tìm thấy mẫu thông báo.")
    return t


@bp.patch("/alert-templates/<int:template_id>")
@require("manager")
def update_template(principal, template_id: int):
    """Edit an area's prepared text."""
    data = json_body()
    db = get_db()
    t = _own_template(principal, template_id)
    _template_fields(data, t)
    audit(db, principal.id, "update_alert_template", "alert_template", t.id, {"name": t.name})
    db.commit()
    return jsonify({"template": _template_json(t)})


@bp.delete("/alert-templates/<int:template_id>")
@require("manager")
def delete_template(principal, template_id: int):
    """Remove an area's prepared text (alerts sent with it keep their own copy of the text)."""
    db = get_db()
    t = _own_template(principal, template_id)
    audit(db, principal.id, "delete_alert_template", "alert_template", t.id, {"name": t.name})
    db.delete(t)
    db.commit()
    return "", 204


# ---------------------------------------------------------------------------- saved stream sources

def _source_json(s: StreamSource) -> dict:
    return {"id": s.id, "area": s.area_id, "name": s.name, "url": s.url}


@bp.get("/stream-sources")
@require("viewer")
def list_stream_sources(principal):
    """Saved live streams (VOV, the province, the district studio) of the caller's areas and above."""
    return jsonify({"sources": [_source_json(s) for s in em.stream_sources_for(get_db(), principal)]})


@bp.post("/stream-sources")
@require("manager")
def create_stream_source(principal):
    """Save a stream for an area: ``{area, name, url}`` (the URL is checked as an alert's would be)."""
    data = json_body()
    db = get_db()
    area = check_area(principal, str(data.get("area", "")))
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise ApiError(400, "stream.bad_name", "name: 1-200 characters", "Tên nguồn phát cần 1-200 ký tự.")
    url = em.check_stream_url(data.get("url"), own=em.own_endpoints(current_app.config),
                              allow_private=bool(current_app.config.get("ALERT_ALLOW_PRIVATE_STREAMS")))
    row = StreamSource(area_id=area.id, name=name.strip(), url=url, created_ms=now_ms())
    db.add(row)
    db.flush()
    audit(db, principal.id, "create_stream_source", "stream_source", row.id, {"name": row.name, "url": url})
    db.commit()
    return jsonify({"source": _source_json(row)}), 201


@bp.delete("/stream-sources/<int:source_id>")
@require("manager")
def delete_stream_source(principal, source_id: int):
    """Forget a saved stream of the caller's areas."""
    db = get_db()
    row = db.get(StreamSource, source_id)
    if row is None or row.area_id is None or not principal.may_touch(db, row.area_id):
        raise ApiError(404, "stream.not_found", "no such stream source", "Không tìm thấy nguồn phát.")
    audit(db, principal.id, "delete_stream_source", "stream_source", row.id, {"name": row.name})
    db.delete(row)
    db.commit()
    return "", 204
