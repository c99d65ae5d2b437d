"""Pages for watching the clusters: the table and map, one cluster with its charts and commands, one receiver.

Every page asks for a logged-in user and shows only the areas under the user's own;
an id from another commune answers 404, the same as an id that does not exist.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlencode

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import select

from controller.db import get_db
from controller.i18n import N_
from controller.models import Event, Fault, FaultAck, User
from controller.pages import common
from controller.runtime import services
from controller.services import areas, health, reports
from controller.services.charts import coordinate_plot, line_chart
from schedules import topics

logger = logging.getLogger(__name__)
bp = Blueprint("clusters", __name__)

EVENT_VI = {"playback.started": N_("Bắt đầu phát"), "playback.finished": N_("Phát xong"),
            "playback.failed": N_("Phát lỗi"), "fault.raised": N_("Sự cố"), "fault.cleared": N_("Hết sự cố"),
            "manifest.accepted": N_("Nhận lịch phát"), "manifest.refused": N_("Từ chối lịch phát"),
            "conf.accepted": N_("Nhận cấu hình"), "command.ack": N_("Xác nhận lệnh"),
            "command.refused": N_("Từ chối lệnh"), "relay.fallback": N_("Chuyển sang bản tin dự phòng"),
            "test_tone.started": N_("Phát âm thử"), "test_tone.finished": N_("Phát xong âm thử"),
            "amplifier.changed": N_("Bật/tắt bộ khuếch đại"), "unknown": N_("Không rõ (cụm thu gửi mã lạ)")}
RANGES = {"24h": 24 * 3600_000, "7d": 7 * 86_400_000}


@bp.get("/clusters")
def clusters_page():
    """The cluster table (filter, sort, pages), status per area, and the map coloured by health."""
    principal = common.login_required()
    db = get_db()
    visible, chosen, area_list = common.scope(principal)
    now = common.now_ms()
    status = request.args.get("status") if request.args.get("status") in health.STATUSES else None
    sort = request.args.get("sort", "name")
    sort = sort if sort in health.SORTS else "name"
    desc = request.args.get("dir") == "desc"
    table = health.clusters(db, visible, now, status=status, q=request.args.get("q"), sort=sort, desc=desc,
                            page=common.int_arg("page", 1), per_page=common.int_arg("per_page", 50, 10, 200))
    summary = health.summary(db, visible, now)
    per_area = health.per_area(db, visible, now)
    names = {a.id: a.name for a in area_list}
    points = health.map_points(db, visible, now)
    plot = coordinate_plot(points, link=lambda rx: url_for("clusters.cluster_page", rx_id=rx))
    return render_template("clusters.html", principal=principal, table=table, summary=summary, per_area=per_area,
                           names=names, areas=area_list, chosen=chosen, status=status, sort=sort, desc=desc,
                           q=request.args.get("q", ""), plot=plot, n_points=len(points), health=health,
                           tile_url=current_app.config.get("MAP_TILE_URL") or "", page_url=common.page_url,
                           local_time=common.local_time, now=now)


@bp.get("/clusters/map.json")
def clusters_map():
    """Markers for the Leaflet map (same scope and filter as the page)."""
    principal = common.login_required()
    visible, _chosen, _ = common.scope(principal)
    points = health.map_points(get_db(), visible, common.now_ms())
    return jsonify({"points": points, "colours": health.STATUS_COLOUR, "labels": health.STATUS_VI})


@bp.get("/clusters/<rx_id>")
def cluster_page(rx_id: str):
    """One cluster: status, latest heartbeat, heartbeat history charts, faults, recent events, commands."""
    principal = common.login_required()
    rx = common.receiver_or_404(principal, rx_id)
    db = get_db()
    now = common.now_ms()
    span_key = request.args.get("range", "24h")
    span_key = span_key if span_key in RANGES else "24h"
    since = now - RANGES[span_key]
    hist = health.history(db, rx.id, since, now)
    fmt = "%H:%M" if span_key == "24h" else "%d/%m"

    def fmt_x(ms: int) -> str:
        return common.local_time(ms, fmt)

    def pts(key: str):
        return [(h["bucket_ms"], h[key]) for h in hist]

    charts = {
        "beats": line_chart([("Số nhịp", "#2b9348", [(h["bucket_ms"], h["beats"]) for h in hist])], since, now,
                                   label=_("Nhịp tim mỗi 15 phút"), fmt_x=fmt_x, y_min=0, y_max=30),
        "offset": line_chart([("Trung bình", "#3a86ff", pts("offset_avg"))], since, now, unit=" ms",
                                    label=_("Lệch đồng hồ (ms)"), fmt_x=fmt_x,
                                    band=[(h["bucket_ms"], h["offset_min"], h["offset_max"]) for h in hist]),
        "signal": line_chart([("Trung bình", "#8338ec", pts("signal_avg"))], since, now, unit="",
                                    label=_("Sóng 4G (dBm)"), fmt_x=fmt_x,
                                    band=[(h["bucket_ms"], h["signal_min"], h["signal_max"]) for h in hist]),
        "temp": line_chart([("Cao nhất", "#e63946", pts("temp_max")), ("Trung bình", "#f4a261",
                                   pts("temp_avg"))], since, now, unit="°", label=_("Nhiệt độ (°C)"), fmt_x=fmt_x),
    }
    hb = None
    if rx.last_hb:
        try:
            hb = json.loads(rx.last_hb)
        except ValueError:
            hb = None
    fields = health.hb_fields(hb if isinstance(hb, dict) else None)
    fault_rows = db.execute(select(Fault, FaultAck, User.username).outerjoin(FaultAck, FaultAck.fault_id == Fault.id)
                            .outerjoin(User, User.id == FaultAck.acked_by).where(Fault.rx_id == rx.id)
                            .order_by(Fault.raised_ms.desc()).limit(50)).all()
    evs = db.scalars(select(Event).where(Event.rx_id == rx.id).order_by(Event.ts_ms.desc()).limit(50)).all()
    open_faults = any(f.cleared_ms is None for f, *_rest in fault_rows)
    status = health.status_of(bool(common.is_online(rx, now)), open_faults, health.broker_lost_since())
    reports.refresh(db)
    asrun, _total = reports.problem_rows(db, {rx.area_id}, now - 7 * 86_400_000, now, per_page=20,
                                    outcomes=reports.OUTCOMES, rx_id=rx.id)
    return render_template("cluster.html", principal=principal, rx=rx, status=status, fields=fields, hb=hb,
                           charts=charts, span_key=span_key, faults=fault_rows, events=evs, event_vi=EVENT_VI,
                           fault_state=health.fault_state, fault_state_vi=common.FAULT_STATE_VI,
                           fault_vi=health.FAULT_VI,
                           area_path=areas.ancestors(db, rx.area_id), health=health, asrun=asrun,
                           outcome_vi=reports.OUTCOME_VI,
                           reason_vi=reports.REASON_VI, local_time=common.local_time, now=now,
                           message=request.args.get("msg"), loads=_safe_json)


def _safe_json(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@bp.post("/clusters/<rx_id>/command")
def cluster_command(rx_id: str):
    """Send a signed volume, resync or test-tone command to one cluster (operators and above; CSRF-protected)."""
    principal = common.login_required()
    rx = common.receiver_or_404(principal, rx_id)
    back = url_for("clusters.cluster_page", rx_id=rx.id)
    if not principal.at_least("operator"):
        return redirect(back + "?" + urlencode({"msg": _("Bạn không có quyền gửi lệnh tới cụm loa.")}))
    action = request.form.get("action")
    args: dict = {}
    if action == "volume":
        try:
            volume = int(request.form.get("volume", ""))
        except ValueError:
            volume = -1
        if not 0 <= volume <= 100:
            return redirect(back + "?" + urlencode({"msg": _("Âm lượng phải từ 0 đến 100.")}))
        args = {"volume": volume}
    elif action == "test_tone":
        args = {"duration_s": 5, "frequency_hz": 1000}
    elif action != "resync":
        return redirect(back + "?" + urlencode({"msg": _("Lệnh không hợp lệ.")}))
    svc = services()
    if svc is None or svc.link is None:
        message = _("Bộ điều khiển chưa kết nối tới máy chủ MQTT; lệnh chưa gửi.")
        return redirect(back + "?" + urlencode({"msg": message}))
    from controller.services import commands

    commands.send(svc.publish, svc.key, topics.rx_scope(rx.id), action, args)
    logger.info("user=%s sent %s %s to rx=%s", principal.username, action, args, rx.id)
    done = {"volume": _("Đã gửi lệnh chỉnh âm lượng."), "resync": _("Đã gửi lệnh đồng bộ lại lịch phát."),
            "test_tone": _("Đã gửi lệnh phát âm thử 5 giây; nghe ở cụm loa.")}[action]
    return redirect(back + "?" + urlencode({"msg": done}))


@bp.get("/receivers/<rx_id>")
def receiver_page(rx_id: str):
    """One receiver: status, heartbeat and its recent events."""
    principal = common.login_required()
    rx = common.receiver_or_404(principal, rx_id)
    db = get_db()
    evs = db.scalars(select(Event).where(Event.rx_id == rx.id).order_by(Event.ts_ms.desc()).limit(100)).all()
    return render_template("receiver.html", principal=principal, rx=rx, now=common.now_ms(),
                           is_online=common.is_online,
                           hb=json.loads(rx.last_hb) if rx.last_hb else None,
                           events=[(e, json.loads(e.body)) for e in evs], local_time=common.local_time)
