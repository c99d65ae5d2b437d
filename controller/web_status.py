"""Pages for watching the clusters: cluster table and map, one cluster, faults, as-run reports.

Every page asks for a logged-in user and shows only the areas under the user's own;
an id from another commune answers 404, the same as an id that does not exist.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from sqlalchemy import func, select

from controller.db import get_db
from controller.i18n import N_
from controller.labels import airtime
from controller.models import Area, Event, Fault, FaultAck, Receiver, User
from controller.runtime import services
from controller.services import areas, faults, health, reports
from controller.web import is_online, local_time, login_required
from schedules import topics
from schedules.events import now_ms

logger = logging.getLogger(__name__)
bp = Blueprint("status", __name__)

EVENT_VI = {"playback.started": N_("Bắt đầu phát"), "playback.finished": N_("Phát xong"),
            "playback.failed": N_("Phát lỗi"), "fault.raised": N_("Sự cố"), "fault.cleared": N_("Hết sự cố"),
            "manifest.accepted": N_("Nhận lịch phát"), "manifest.refused": N_("Từ chối lịch phát"),
            "conf.accepted": N_("Nhận cấu hình"), "command.ack": N_("Xác nhận lệnh"),
            "command.refused": N_("Từ chối lệnh"), "relay.fallback": N_("Chuyển sang bản tin dự phòng"),
            "test_tone.started": N_("Phát âm thử"), "test_tone.finished": N_("Phát xong âm thử"),
            "amplifier.changed": N_("Bật/tắt bộ khuếch đại"), "unknown": N_("Không rõ (cụm thu gửi mã lạ)")}
FAULT_STATE_VI = {"open": N_("Chưa xử lý"), "acked": N_("Đã tiếp nhận"), "resolved": N_("Đã khắc phục")}
RANGES = {"24h": 24 * 3600_000, "7d": 7 * 86_400_000}


def _tz() -> ZoneInfo:
    return ZoneInfo(current_app.config["TIMEZONE"])


def _int_arg(name: str, default: int, low: int = 1, high: int = 10_000) -> int:
    try:
        return max(low, min(high, int(request.args.get(name, default))))
    except ValueError:
        return default


def _scope(principal):
    """(visible area ids, chosen area or None, the areas to choose from); 404 for an area out of scope."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    area_list = db.scalars(select(Area).where(Area.id.in_(visible)).order_by(Area.id)).all()
    chosen = request.args.get("area") or None
    if chosen:
        if chosen not in visible:
            abort(404)
        visible = areas.subtree_ids(db, chosen)
    return visible, chosen, area_list


def _receiver_or_404(principal, rx_id: str) -> Receiver:
    db = get_db()
    rx = db.get(Receiver, rx_id)
    if rx is None or not principal.may_touch(db, rx.area_id):
        abort(404)
    return rx


def _parse_day(text: str | None) -> date | None:
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime((text or "").strip(), fmt).date()
        except ValueError:
            continue
    return None


def _page_url(**changes) -> str:
    args = {k: v for k, v in request.args.items() if v}
    args.update({k: v for k, v in changes.items()})
    return request.path + "?" + urlencode({k: v for k, v in args.items() if v not in (None, "")})


# ----------------------------------------------------------------- clusters


@bp.get("/clusters")
def clusters_page():
    """The cluster table (filter, sort, pages), status per area, and the map coloured by health."""
    principal = login_required()
    db = get_db()
    visible, chosen, area_list = _scope(principal)
    now = now_ms()
    status = request.args.get("status") if request.args.get("status") in health.STATUSES else None
    sort = request.args.get("sort") if request.args.get("sort") in health.SORTS else "name"
    desc = request.args.get("dir") == "desc"
    table = health.clusters(db, visible, now, status=status, q=request.args.get("q"), sort=sort, desc=desc,
                            page=_int_arg("page", 1), per_page=_int_arg("per_page", 50, 10, 200))
    summary = health.summary(db, visible, now)
    per_area = health.per_area(db, visible, now)
    names = {a.id: a.name for a in area_list}
    points = health.map_points(db, visible, now)
    plot = health.coordinate_plot(points, link=lambda rx: url_for("status.cluster_page", rx_id=rx))
    return render_template("clusters.html", principal=principal, table=table, summary=summary, per_area=per_area,
                           names=names, areas=area_list, chosen=chosen, status=status, sort=sort, desc=desc,
                           q=request.args.get("q", ""), plot=plot, n_points=len(points), health=health,
                           tile_url=current_app.config.get("MAP_TILE_URL") or "", page_url=_page_url,
                           local_time=local_time, now=now)


@bp.get("/clusters/map.json")
def clusters_map():
    """Markers for the Leaflet map (same scope and filter as the page)."""
    principal = login_required()
    visible, _chosen, _ = _scope(principal)
    points = health.map_points(get_db(), visible, now_ms())
    return jsonify({"points": points, "colours": health.STATUS_COLOUR, "labels": health.STATUS_VI})


@bp.get("/clusters/<rx_id>")
def cluster_page(rx_id: str):
    """One cluster: status, latest heartbeat, heartbeat history charts, faults, recent events, commands."""
    principal = login_required()
    rx = _receiver_or_404(principal, rx_id)
    db = get_db()
    now = now_ms()
    span_key = request.args.get("range") if request.args.get("range") in RANGES else "24h"
    since = now - RANGES[span_key]
    hist = health.history(db, rx.id, since, now)
    fmt = "%H:%M" if span_key == "24h" else "%d/%m"

    def fmt_x(ms: int) -> str:
        return local_time(ms, fmt)

    def pts(key: str):
        return [(h["bucket_ms"], h[key]) for h in hist]

    charts = {
        "beats": health.line_chart([("Số nhịp", "#2b9348", [(h["bucket_ms"], h["beats"]) for h in hist])], since, now,
                                   label=_("Nhịp tim mỗi 15 phút"), fmt_x=fmt_x, y_min=0, y_max=30),
        "offset": health.line_chart([("Trung bình", "#3a86ff", pts("offset_avg"))], since, now, unit=" ms",
                                    label=_("Lệch đồng hồ (ms)"), fmt_x=fmt_x,
                                    band=[(h["bucket_ms"], h["offset_min"], h["offset_max"]) for h in hist]),
        "signal": health.line_chart([("Trung bình", "#8338ec", pts("signal_avg"))], since, now, unit="",
                                    label=_("Sóng 4G (dBm)"), fmt_x=fmt_x,
                                    band=[(h["bucket_ms"], h["signal_min"], h["signal_max"]) for h in hist]),
        "temp": health.line_chart([("Cao nhất", "#e63946", pts("temp_max")), ("Trung bình", "#f4a261",
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
    status = health.status_of(bool(is_online(rx, now)), open_faults, health.broker_lost_since())
    reports.refresh(db)
    asrun, _total = reports.problem_rows(db, {rx.area_id}, now - 7 * 86_400_000, now, per_page=20,
                                    outcomes=reports.OUTCOMES, rx_id=rx.id)
    return render_template("cluster.html", principal=principal, rx=rx, status=status, fields=fields, hb=hb,
                           charts=charts, span_key=span_key, faults=fault_rows, events=evs, event_vi=EVENT_VI,
                           fault_state=health.fault_state, fault_state_vi=FAULT_STATE_VI, fault_vi=health.FAULT_VI,
                           area_path=areas.ancestors(db, rx.area_id), health=health, asrun=asrun,
                           outcome_vi=reports.OUTCOME_VI,
                           reason_vi=reports.REASON_VI, local_time=local_time, now=now,
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
    principal = login_required()
    rx = _receiver_or_404(principal, rx_id)
    back = url_for("status.cluster_page", rx_id=rx.id)
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


# ----------------------------------------------------------------- faults


@bp.get("/faults")
def faults_page():
    """Faults: open / acknowledged / resolved, who acknowledged, time to repair, working share over time."""
    principal = login_required()
    db = get_db()
    visible, chosen, area_list = _scope(principal)
    now = now_ms()
    state = request.args.get("state") if request.args.get("state") in ("open", "acked", "resolved", "all") else None
    state = state or "open"
    per_page = 50
    q = faults.fault_query(visible, state)
    total = db.scalar(select(func.count()).select_from(q.subquery())) or 0
    pages = max(1, -(-total // per_page))
    page = min(_int_arg("page", 1), pages)
    rows = db.execute(q.order_by(Fault.raised_ms.desc()).limit(per_page).offset((page - 1) * per_page)).all()
    days = 7 if request.args.get("days") != "30" else 30
    since = now - days * 86_400_000
    step = 3600_000 if days == 7 else 6 * 3600_000
    share = health.working_share(db, visible, since - since % step, now, step)
    chart = health.share_chart(share, since - since % step, now, lambda ms: local_time(ms, "%d/%m"),
                               _("Tỉ lệ cụm loa hoạt động"))
    stats = health.fault_stats(db, visible, since)
    names = {a.id: a.name for a in area_list}
    return render_template("faults.html", principal=principal, rows=rows, total=total, page=page, pages=pages,
                           state=state, chosen=chosen, areas=area_list, names=names, chart=chart, stats=stats,
                           days=days, share_now=share[-1][1] if share else None, fault_vi=health.FAULT_VI,
                           fault_state=health.fault_state, fault_state_vi=FAULT_STATE_VI, duration=health.duration_vi,
                           page_url=_page_url, local_time=local_time, now=now, message=request.args.get("msg"),
                           can_ack=principal.at_least("operator"))


@bp.post("/faults/<int:fault_id>/ack")
def ack_fault(fault_id: int):
    """Acknowledge a fault (operators and above, in their area; CSRF-protected)."""
    principal = login_required()
    db = get_db()
    fault = db.get(Fault, fault_id)
    rx = db.get(Receiver, fault.rx_id) if fault is not None else None
    if fault is None or rx is None or not principal.may_touch(db, rx.area_id):
        abort(404)
    from controller.auth import local_path

    back = local_path(request.form.get("back")) or url_for("status.faults_page")
    sep = "&" if "?" in back else "?"
    if not principal.at_least("operator"):
        return redirect(back + sep + urlencode({"msg": _("Bạn không có quyền tiếp nhận sự cố.")}))
    if db.get(FaultAck, fault.id) is None:
        db.add(FaultAck(fault_id=fault.id, acked_by=principal.id, acked_ms=now_ms(),
                        note=(request.form.get("note") or "")[:500] or None))
        db.commit()
        logger.info("user=%s acknowledged fault %s (%s) on rx=%s", principal.username, fault.id, fault.code, rx.id)
    return redirect(back + sep + urlencode({"msg": _("Đã tiếp nhận sự cố.")}))


# ----------------------------------------------------------------- reports


def _report_range() -> tuple[date, date, str | None]:
    tz = _tz()
    today = datetime.now(tz).date()
    first = _parse_day(request.args.get("from"))
    last = _parse_day(request.args.get("to"))
    error = None
    if request.args.get("from") and first is None or request.args.get("to") and last is None:
        error = _("Ngày không hợp lệ; hãy nhập theo dạng dd/mm/yyyy.")
    last = last or today
    first = first or last - timedelta(days=6)
    if first > last:
        first, last, error = last, first, _("Ngày bắt đầu sau ngày kết thúc; đã đổi chỗ hai ngày.")
    if (last - first).days > 366:
        first, error = last - timedelta(days=366), _("Báo cáo tối đa một năm; đã rút ngắn khoảng thời gian.")
    return first, last, error


def _report_query(principal):
    """What every report view reads from the query string, with the as-run table brought up to date.

    Returns ``(db, visible, chosen, area_list, tz, first, last, error, since, until, period)``.
    """
    db = get_db()
    visible, chosen, area_list = _scope(principal)
    tz = _tz()
    first, last, error = _report_range()
    since, until = reports.day_range(first, last, tz)
    period = request.args.get("period") if request.args.get("period") in ("day", "week", "month") else "day"
    reports.refresh(db)
    return db, visible, chosen, area_list, tz, first, last, error, since, until, period


@bp.get("/reports")
def reports_page():
    """As-run report: outcomes, broadcast hours per area and period, each occurrence, what went wrong."""
    principal = login_required()
    db, visible, chosen, area_list, tz, first, last, error, since, until, period = _report_query(principal)
    counts = reports.outcome_counts(db, visible, since, until)
    hours = reports.broadcast_hours(db, visible, since, until, tz, period)
    occ = reports.occurrences(db, visible, since, until, limit=100)
    per_page = 100
    # The as-run log per item and receiver: by default only what went wrong, or any outcome.
    outcome = request.args.get("outcome", "problems")
    outcome = outcome if outcome in ("problems", "all", *reports.OUTCOMES) else "problems"
    chosen_outcomes = {"problems": ("partial", "failed", "missed", "unfinished"),
                       "all": reports.OUTCOMES}.get(outcome, (outcome,))
    problems, total = reports.problem_rows(db, visible, since, until, page=_int_arg("page", 1), per_page=per_page,
                                           outcomes=chosen_outcomes)
    names = {a.id: a.name for a in area_list}
    rx_names = dict(db.execute(select(Receiver.id, Receiver.name).where(
        Receiver.id.in_({p["rx_id"] for p in problems}))).all()) if problems else {}
    item_titles = reports.titles(db, {p["programme_item_id"] for p in problems if p["programme_item_id"]})
    return render_template("reports.html", principal=principal, counts=counts, hours=hours, occ=occ,
                           problems=problems, total=total, page=_int_arg("page", 1), outcome=outcome,
                           pages=max(1, -(-total // per_page)), first=first, last=last, error=error, period=period,
                           chosen=chosen, areas=area_list, names=names, rx_names=rx_names, titles=item_titles,
                           outcome_vi=reports.OUTCOME_VI,
                           reason_vi=reports.REASON_VI, period_label=reports.period_label, local_time=local_time,
                           page_url=_page_url, bars=_hour_bars(hours, names))


def _hour_bars(hours: dict, names: dict[str, str]) -> list[dict]:
    """Bars for the broadcast-hours picture: one per area, its total over the range (summed in ms, unrounded)."""
    totals = [(a, sum(hours["ms"][a].values())) for a in hours["areas"]]
    top = max((t for _, t in totals), default=0) or 1
    return [{"area": names.get(a, a), "hours": round(t / 3_600_000, 2), "pct": round(100 * t / top, 1),
             "label": airtime(t)} for a, t in totals]


def _hours_label(hours: float) -> str:
    """'2.5 giờ', '12 phút', '40 giây' (a short bulletin that played is not '0 phút'): :func:`airtime`."""
    return airtime(hours * 3_600_000)


@bp.get("/reports/as-run.csv")
def reports_csv():
    """The full as-run log of the range as CSV (streamed)."""
    principal = login_required()
    db, visible, chosen, _areas, tz, first, last, _error, since, until, _period = _report_query(principal)
    name = f"as-run_{(chosen or 'all').replace('/', '-')}_{first:%Y%m%d}-{last:%Y%m%d}.csv"
    return reports.csv_download(visible, since, until, tz, name)


@bp.get("/reports/print")
def reports_print():
    """A printable as-run report a district can file: totals, hours per area, every occurrence."""
    principal = login_required()
    db, visible, chosen, area_list, tz, first, last, _error, since, until, period = _report_query(principal)
    names = {a.id: a.name for a in area_list}
    return render_template("report_print.html", principal=principal,
                           counts=reports.outcome_counts(db, visible, since, until),
                           hours=reports.broadcast_hours(db, visible, since, until, tz, period),
                           occ=reports.occurrences(db, visible, since, until, limit=2000),
                           first=first, last=last, chosen=chosen, names=names, outcome_vi=reports.OUTCOME_VI,
                           reason_vi=reports.REASON_VI,
                           period_label=reports.period_label, local_time=local_time, printed=now_ms())
