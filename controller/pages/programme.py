"""The programme page: an area's day or week timeline, and approving or rejecting drafts."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import select

from controller.db import get_db
from controller.models import Area, ProgrammeItem
from controller.pages import common
from controller.runtime import services
from controller.services import areas
from controller.services.programme import LIVE_STATUSES, can_approve, decide, entry_from_row, targets_of
from schedules.programme import ProgrammeError

bp = Blueprint("programme", __name__)


@bp.get("/programme")
def programme_page():
    """Day or week timeline of one area: sessions, items, over-runs, conflicts, drafts to approve."""
    from controller.services.timeline import timeline  # the same computation the API serves

    principal = common.login_required()
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
    first = first or datetime.fromtimestamp(common.now_ms() / 1000, tz).date()
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
        if row.session_key is not None and area.id in targets_of(row):  # not None: the WHERE says so
            in_sessions.setdefault(row.session_key, []).append(row)
    return render_template("programme.html", principal=principal, area=area, areas=area_list, first=first,
                           days=days, rows=rows, tl=tl, lost=lost, cut=cut, drafts=drafts, in_sessions=in_sessions,
                           can_edit=principal.at_least("operator"),
                           can_approve=lambda row: can_approve(principal, db, row), entry=entry_from_row,
                           local_time=common.local_time, timedelta=timedelta, message=request.args.get("msg"))


@bp.post("/programme/items/<int:item_id>/<any(approve,reject):decision>")
def decide_page(item_id: int, decision: str):
    """Approve or reject a draft from the programme page (CSRF-protected form)."""
    principal = common.login_required()
    db = get_db()
    row = db.get(ProgrammeItem, item_id)
    if row is None or row.status not in LIVE_STATUSES or not principal.may_touch(db, row.area_id):
        abort(404)  # a deleted item stays deleted, as in the API
    vi = get_locale().language == "vi"
    try:
        placement = decide(db, principal, row, decision == "approve", request.form.get("reason", ""),
                           tz_name=current_app.config["TIMEZONE"])
    except ProgrammeError as exc:  # no right to decide (ApprovalRefused), or its time has passed, or no room
        return redirect(url_for("programme.programme_page", area=request.form.get("area"),
                                msg=exc.message_vi if vi else exc.message))
    db.commit()
    svc = services()
    if svc is not None:
        svc.programme_changed()
    done = _("Đã duyệt.") if decision == "approve" else _("Đã từ chối.")
    notice = placement and (placement.notice_vi if vi else placement.notice)
    if notice:  # where it plays, when that is not the plain answer (its session is on air)
        done = f"{done} {notice}"
    return redirect(url_for("programme.programme_page", area=request.form.get("area"), msg=done))
