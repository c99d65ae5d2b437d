"""HTML pages in Vietnamese: login, overview of receivers and programme, one receiver."""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, redirect, render_template, request, session, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import case, func, select

from controller import auth
from controller.db import get_db
from controller.labels import session_name
from controller.models import (
    ROLES,
    Area,
    Event,
    ExtraSessionRow,
    Fault,
    MissedPlay,
    ProgrammeItem,
    Receiver,
    SessionTemplateRow,
)
from controller.runtime import services
from controller.services import areas, asrun, health
from controller.services.health import in_fleet
from controller.services.programme import (
    LIVE_STATUSES,
    can_approve,
    decide,
    entry_from_row,
    load_programme,
    targets_of,
)
from schedules.events import now_ms
from schedules.planner import plan, session_slots
from schedules.programme import ProgrammeError, default_templates

bp = Blueprint("web", __name__)

STALE_MS = 90_000  # three missed heartbeats


def local_time(ms: int | None, fmt: str = "%d/%m/%Y %H:%M:%S") -> str:
    """Epoch ms -> local time text (dd/mm/yyyy, 24 h)."""
    if ms is None:
        return "—"
    tz = ZoneInfo(current_app.config["TIMEZONE"])
    return datetime.fromtimestamp(ms / 1000, tz).strftime(fmt)


def login_required():
    """The logged-in user, or a redirect to the login page (raised)."""
    principal = auth.web_principal()
    if principal is None:
        abort(redirect(url_for("web.login", next=request.path)))
    return principal


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Log in with username and password (CSRF-protected form)."""
    error = _("Phiên làm việc đã hết hạn, vui lòng đăng nhập lại.") if session.pop("expired", False) else None
    status = 200
    if request.method == "POST":
        try:
            principal = auth.authenticate(get_db(), request.form.get("username", ""),
                                          request.form.get("password", ""))
        except auth.LoginBusy:
            return render_template("login.html", error=_("Máy chủ đang bận, xin thử lại sau giây lát.")), 503
        if principal is None:
            # One answer for an unknown account, a wrong password and an address that must wait (auth.py).
            error = _("Sai tên đăng nhập hoặc mật khẩu.")
            status = 401
            time.sleep(0.5)
        else:
            auth.web_login(principal)
            return redirect(auth.local_path(request.args.get("next")) or url_for("web.overview"))
    return render_template("login.html", error=error), status


@bp.post("/logout")
def logout():
    """End the browser session."""
    auth.web_logout()
    return redirect(url_for("web.login"))


@bp.get("/")
def overview():
    """Receivers online/offline and the programme with what played."""
    principal = login_required()
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    now = now_ms()
    fresh = now - STALE_MS
    online_q = (Receiver.online.is_(True)) & (Receiver.last_seen_ms > fresh)
    counts = db.execute(select(Receiver.area_id, func.count(), func.sum(case((online_q, 1), else_=0)))
                        .where(in_fleet(visible)).group_by(Receiver.area_id)).all()
    total = sum(c for _, c, _ in counts)
    # Without the broker nobody can be heard: the count of who is online is not known (None).
    online = None if health.broker_lost_since() is not None else sum(int(o or 0) for _, _, o in counts)
    # Only the clusters that need a look: offline ones, at most 50 (the full table is on /clusters).
    receivers = db.scalars(select(Receiver).where(in_fleet(visible), ~online_q)
                           .order_by(Receiver.last_seen_ms.desc().nulls_last(), Receiver.id).limit(50)).all()
    # What plays from 12 hours ago to 36 hours ahead, occurrence by occurrence.
    programme, nodes = load_programme(db)
    since = now - 12 * 3600_000
    result = plan(programme, nodes, since, tz_name=current_app.config["TIMEZONE"], window_ms=48 * 3600_000)
    occurrences = sorted(((scope.removeprefix("area/"), i) for scope, m in result.manifests.items()
                          for i in m.items if scope.removeprefix("area/") in visible),
                         key=lambda x: (x[1].start_ms, x[1].id))[:300]
    ids = [i.id for _, i in occurrences]
    played = dict(db.execute(
        select(Event.item_id, func.count(func.distinct(Event.rx_id)))
        .where(Event.type == "playback.finished", Event.item_id.in_(ids))
        .group_by(Event.item_id)).all()) if ids else {}
    missed = dict(db.execute(select(MissedPlay.occurrence_id, func.count()).where(MissedPlay.occurrence_id.in_(ids))
                             .group_by(MissedPlay.occurrence_id)).all()) if ids else {}
    area_names = {a.id: a.name for a in db.scalars(select(Area).where(Area.id.in_(visible)))}
    parent = {n.id: n.parent_id for n in nodes}
    rx_per_area: dict[str, int] = {}
    for area_id, count, _online in counts:  # each area counts its own receivers and those below it
        node: str | None = area_id
        while node is not None:
            rx_per_area[node] = rx_per_area.get(node, 0) + count
            node = parent.get(node)
    rows = []
    for area_id, i in occurrences:
        # A past play's state is what the as-run record says: all, some or none of the clusters played it.
        expected = max(0, rx_per_area.get(area_id, 0) - len(i.exclude))
        done = played.get(i.id, 0)
        rows.append({"item": i, "area_id": area_id, "wire": i.id, "played": done, "expected": expected,
                     "state": asrun.play_state(i.start_ms, i.duration_ms, done, missed.get(i.id, 0), now, expected)})
    tz = ZoneInfo(current_app.config["TIMEZONE"])
    return render_template("overview.html", principal=principal, receivers=receivers, rows=rows, total=total,
                           area_names=area_names, online=online, now=now, is_online=is_online,
                           local_time=local_time, summary=health.summary(db, visible, now),
                           areas=_area_panel(db, visible, nodes, programme, rows, now, tz))


def _area_panel(db, visible: set[str], nodes, programme, rows: list[dict], now: int, tz: ZoneInfo) -> list[dict]:
    """Per area with clusters: ok / fault / offline (its own and those below), today's sessions, what plays now,
    open faults. Areas with no cluster are left out; at most 300 rows."""
    parent = {n.id: n.parent_id for n in nodes}
    by_id = {n.id: n for n in nodes}
    status: dict[str, dict[str, int]] = {}
    for area_id, counts in health.per_area(db, visible, now).items():
        node: str | None = area_id
        while node is not None and node in visible:  # a district shows its communes' clusters too
            acc = status.setdefault(node, {"total": 0, "ok": 0, "fault": 0, "offline": 0, "unknown": 0})
            for key, value in counts.items():
                acc[key] += value
            node = parent.get(node)
    faults: dict[str, int] = {}
    for area_id, n in db.execute(select(Receiver.area_id, func.count()).join(Fault, Fault.rx_id == Receiver.id)
                                 .where(in_fleet(visible), Fault.cleared_ms.is_(None)).group_by(Receiver.area_id)):
        node = area_id
        while node is not None and node in visible:
            faults[node] = faults.get(node, 0) + n
            node = parent.get(node)
    playing: dict[str, list[str]] = {}
    for r in rows:
        if r["state"] == "playing":
            playing.setdefault(r["area_id"], []).append(r["item"].title)
    today = datetime.fromtimestamp(now / 1000, tz).date()
    names = {a.id: a.name for a in db.scalars(select(Area).where(Area.id.in_(list(status))))}
    panel = []
    for area_id in sorted(status, key=lambda a: (a.count("/"), names.get(a, a)))[:300]:
        node = by_id.get(area_id)
        slots = session_slots(node, programme, today, tz) if node is not None else []
        chain, up = [], area_id  # what plays here now: this area's items and those of the areas above
        while up is not None:
            chain += playing.get(up, [])
            up = parent.get(up)
        counts = status[area_id]
        total = counts["total"] or 1
        panel.append({"id": area_id, "name": names.get(area_id, area_id), "counts": counts,
                      "pct": {k: round(100 * counts[k] / total, 1) for k in health.STATUSES},
                      "sessions": [{"name": s.name, "start_ms": s.start_ms, "end_ms": s.end_ms,
                                    "now": s.start_ms <= now < s.end_ms} for s in slots],
                      "playing": chain, "faults": faults.get(area_id, 0)})
    return panel


@bp.get("/receivers/<rx_id>")
def receiver_page(rx_id: str):
    """One receiver: status, heartbeat and its recent events."""
    principal = login_required()
    db = get_db()
    rx = db.get(Receiver, rx_id)
    if rx is None or not principal.may_touch(db, rx.area_id):
        abort(404)
    evs = db.scalars(select(Event).where(Event.rx_id == rx.id).order_by(Event.ts_ms.desc()).limit(100)).all()
    return render_template("receiver.html", principal=principal, rx=rx, now=now_ms(), is_online=is_online,
                           hb=json.loads(rx.last_hb) if rx.last_hb else None,
                           events=[(e, json.loads(e.body)) for e in evs], local_time=local_time)


def is_online(rx: Receiver, now: int) -> bool | None:
    """Online and heard from within three heartbeats; None (unknown) while the controller has lost the broker."""
    if health.broker_lost_since() is not None:
        return None
    return bool(rx.online and rx.last_seen_ms and now - rx.last_seen_ms < STALE_MS)


@bp.get("/programme")
def programme_page():
    """Day or week timeline of one area: sessions, items, over-runs, conflicts, drafts to approve."""
    from controller.services.timeline import timeline  # the same computation the API serves

    principal = login_required()
    db = get_db()
    tz = ZoneInfo(current_app.config["TIMEZONE"])
    visible = areas.subtree_ids(db, principal.area_id)
    area_list = db.scalars(select(Area).where(Area.id.in_(visible)).order_by(Area.id)).all()
    if not area_list:
        abort(404)
    asked = request.args.get("area")
    area = db.get(Area, asked) if asked else area_list[-1]
    if area is None or area.id not in visible:
        abort(404)  # unknown and out-of-scope areas answer alike: ids are not probed
    try:
        first = date.fromisoformat(request.args.get("date", "")) if request.args.get("date") else None
    except ValueError:
        first = None
    first = first or datetime.fromtimestamp(now_ms() / 1000, tz).date()
    days = 7 if request.args.get("days") == "7" else 1
    tl = timeline(db, area, first, days, tz)
    rows = []
    for d in range(days):
        day = first + timedelta(days=d)
        start = int(datetime.combine(day, datetime.min.time(), tz).timestamp() * 1000)
        span = 24 * 3600_000

        def pos(ms: int, dur: int, start=start, span=span) -> str:
            left = max(0.0, (ms - start) / span * 100)
            width = max(0.35, min(100 - left, dur / span * 100))
            return f"left:{left:.3f}%;width:{width:.3f}%"

        rows.append({
            "day": day,
            "sessions": [(s, pos(s["start_ms"], s["end_ms"] - s["start_ms"])) for s in tl["sessions"]
                         if start <= s["start_ms"] < start + span],
            "plays": [(i, pos(i["start_ms"], i["duration_ms"])) for i in tl["items"]
                      if start <= i["start_ms"] < start + span],
        })
    lost = {c["loser"] for c in tl["conflicts"]}
    cut = {o["occurrence_id"]: o["cut_ms"] for o in tl["overruns"]}
    drafts = db.scalars(select(ProgrammeItem).where(ProgrammeItem.status == "draft",
                                                    ProgrammeItem.area_id.in_(visible))
                        .order_by(ProgrammeItem.id)).all()
    # The order of each session's items in this area (drag to change it).
    in_sessions: dict[str, list[ProgrammeItem]] = {}
    for row in db.scalars(select(ProgrammeItem).where(ProgrammeItem.status.in_(("draft", "approved")),
                                                      ProgrammeItem.session_key.is_not(None))
                          .order_by(ProgrammeItem.sort_order, ProgrammeItem.id)):
        if area.id in targets_of(row):
            in_sessions.setdefault(row.session_key, []).append(row)
    return render_template("programme.html", principal=principal, area=area, areas=area_list, first=first,
                           days=days, rows=rows, tl=tl, lost=lost, cut=cut, drafts=drafts, in_sessions=in_sessions,
                           can_edit=principal.at_least("operator"),
                           can_approve=lambda row: can_approve(principal, db, row), entry=entry_from_row,
                           local_time=local_time, timedelta=timedelta, message=request.args.get("msg"))


@bp.post("/programme/items/<int:item_id>/<any(approve,reject):decision>")
def decide_page(item_id: int, decision: str):
    """Approve or reject a draft from the programme page (CSRF-protected form)."""
    principal = login_required()
    db = get_db()
    row = db.get(ProgrammeItem, item_id)
    if row is None or row.status not in LIVE_STATUSES or not principal.may_touch(db, row.area_id):
        abort(404)  # a deleted item stays deleted, as in the API
    vi = get_locale().language == "vi"
    try:
        placement = decide(db, principal, row, decision == "approve", request.form.get("reason", ""),
                           tz_name=current_app.config["TIMEZONE"])
    except ProgrammeError as exc:  # no right to decide (ApprovalRefused), or its time has passed, or no room
        return redirect(url_for("web.programme_page", area=request.form.get("area"),
                                msg=exc.message_vi if vi else exc.message))
    db.commit()
    svc = services()
    if svc is not None:
        svc.programme_changed()
    done = _("Đã duyệt.") if decision == "approve" else _("Đã từ chối.")
    notice = placement and (placement.notice_vi if vi else placement.notice)
    if notice:  # where it plays, when that is not the plain answer (its session is on air)
        done = f"{done} {notice}"
    return redirect(url_for("web.programme_page", area=request.form.get("area"), msg=done))


def session_names(db, visible: set[str]) -> dict[str, str]:
    """Session key -> name over the visible areas (level defaults, the areas' own, extra sessions): two queries."""
    names = {t.key: t.name for level in default_templates().values() for t in level}
    own = db.execute(select(SessionTemplateRow.key, SessionTemplateRow.name)
                     .where(SessionTemplateRow.area_id.in_(visible)))
    extras = db.execute(select(ExtraSessionRow.key, ExtraSessionRow.name).where(ExtraSessionRow.area_id.in_(visible)))
    names.update(dict(own.all()))
    names.update(dict(extras.all()))
    return {k: session_name(v) for k, v in names.items()}


@bp.get("/bulletins")
def bulletins_page():
    """Bulletins: upload with progress, record from the microphone, type text to be read, listen, schedule."""
    principal = login_required()
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    area_list = db.scalars(select(Area).where(Area.id.in_(visible)).order_by(Area.id)).all()
    texts = {  # words the page's script shows, translated here
        "uploading": _("Đang tải lên"), "processing": _("Đang xử lý âm thanh"), "ready": _("Sẵn sàng"),
        "failed": _("Lỗi"), "queued": _("Đang chờ xử lý"), "recording": _("Đang ghi âm... bấm lần nữa để dừng"),
        "no_mic": _("Không dùng được micrô của máy này."), "too_large": _("Tệp quá lớn."),
        "scheduled": _("Đã xếp lịch."), "draft": _("Đã xếp lịch, chờ duyệt."),
        "network": _("Mất kết nối tới máy chủ, hãy thử lại."), "recorded": _("Bản ghi âm"),
        "pending": _("Chờ duyệt"), "approve": _("Duyệt"), "reject": _("Từ chối"), "approved": _("Đã duyệt."),
        "rejected": _("Đã từ chối."), "daily": _("hằng ngày"), "sessions": session_names(db, visible),
    }
    today = datetime.now(ZoneInfo(current_app.config["TIMEZONE"])).date().isoformat()
    return render_template("bulletins.html", principal=principal, areas=area_list, texts=texts, today=today,
                           can_edit=principal.at_least("operator"),
                           max_mb=int(current_app.config["MAX_UPLOAD_BYTES"]) // (1024 * 1024))



@bp.get("/admin")
def admin_page():
    """Administration: the area tree (add, rename, merge), users and roles, session templates."""
    principal = login_required()
    if not principal.at_least("manager"):
        abort(403)
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    area_list = db.scalars(select(Area).where(Area.id.in_(visible)).order_by(Area.id)).all()
    counts = dict(db.execute(select(Receiver.area_id, func.count()).where(in_fleet(visible))
                             .group_by(Receiver.area_id)).all())
    children: dict[str | None, list[Area]] = {}
    for a in area_list:
        parent = a.parent_id if a.parent_id in visible else None
        children.setdefault(parent, []).append(a)
    fleet = db.scalars(select(Receiver).where(Receiver.area_id.in_(visible))
                       .order_by(Receiver.retired_ms.is_not(None), Receiver.area_id, Receiver.id)).all()
    area_names = {a.id: a.name for a in area_list}
    return render_template("admin.html", principal=principal, areas=area_list, children=children, counts=counts,
                           roles=[r for r in ROLES if ROLES.index(r) <= ROLES.index(principal.role)],
                           fleet=fleet, area_names=area_names, now=now_ms(), is_online=is_online,
                           today=datetime.now(ZoneInfo(current_app.config["TIMEZONE"])).date())


@bp.app_errorhandler(403)
@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
@bp.app_errorhandler(500)
def error_page(exc):
    """A page in the user's language for refusals and failures (JSON under /api/); never a stack trace."""
    code = getattr(exc, "code", 500) or 500
    if request.path.startswith("/api/"):
        from controller.errors import error_response

        return error_response(code, f"http.{code}", getattr(exc, "name", "error"), _("Có lỗi xảy ra."))
    messages = {403: _("Bạn không có quyền xem trang này."), 404: _("Không tìm thấy trang này."),
                405: _("Thao tác không hợp lệ."), 500: _("Có lỗi xảy ra. Xin thử lại sau.")}
    principal = auth.web_principal()
    return render_template("error.html", principal=principal, code=code,
                           message=messages.get(code, messages[500])), code
