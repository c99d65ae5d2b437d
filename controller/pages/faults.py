"""The faults page: open, acknowledged and resolved faults, time to repair, the working share over time."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_babel import gettext as _
from sqlalchemy import func, select

from controller import auth
from controller.db import get_db
from controller.models import Fault, FaultAck, Receiver
from controller.pages import common
from controller.services import faults, health
from controller.services.charts import share_chart

logger = logging.getLogger(__name__)
bp = Blueprint("faults", __name__)


@bp.get("/faults")
def faults_page():
    """Faults: open / acknowledged / resolved, who acknowledged, time to repair, working share over time."""
    principal = common.login_required()
    db = get_db()
    visible, chosen, area_list = common.scope(principal)
    now = common.now_ms()
    state = request.args.get("state") if request.args.get("state") in ("open", "acked", "resolved", "all") else None
    state = state or "open"
    per_page = 50
    q = faults.fault_query(visible, state)
    total = db.scalar(select(func.count()).select_from(q.subquery())) or 0
    pages = max(1, -(-total // per_page))
    page = min(common.int_arg("page", 1), pages)
    rows = db.execute(q.order_by(Fault.raised_ms.desc()).limit(per_page).offset((page - 1) * per_page)).all()
    days = 7 if request.args.get("days") != "30" else 30
    since = now - days * 86_400_000
    step = 3600_000 if days == 7 else 6 * 3600_000
    share = health.working_share(db, visible, since - since % step, now, step)
    chart = share_chart(share, since - since % step, now, lambda ms: common.local_time(ms, "%d/%m"),
                               _("Tỉ lệ cụm loa hoạt động"))
    stats = health.fault_stats(db, visible, since)
    names = {a.id: a.name for a in area_list}
    return render_template("faults.html", principal=principal, rows=rows, total=total, page=page, pages=pages,
                           state=state, chosen=chosen, areas=area_list, names=names, chart=chart, stats=stats,
                           days=days, share_now=share[-1][1] if share else None, fault_vi=health.FAULT_VI,
                           fault_state=health.fault_state, fault_state_vi=common.FAULT_STATE_VI,
                           duration=health.duration_vi, page_url=common.page_url, local_time=common.local_time, now=now,
                           message=request.args.get("msg"),
                           can_ack=principal.at_least("operator"))


@bp.post("/faults/<int:fault_id>/ack")
def ack_fault(fault_id: int):
    """Acknowledge a fault (operators and above, in their area; CSRF-protected)."""
    principal = common.login_required()
    db = get_db()
    fault = db.get(Fault, fault_id)
    rx = db.get(Receiver, fault.rx_id) if fault is not None else None
    if fault is None or rx is None or not principal.may_touch(db, rx.area_id):
        abort(404)
    back = auth.local_path(request.form.get("back")) or url_for("faults.faults_page")
    sep = "&" if "?" in back else "?"
    if not principal.at_least("operator"):
        return redirect(back + sep + urlencode({"msg": _("Bạn không có quyền tiếp nhận sự cố.")}))
    if db.get(FaultAck, fault.id) is None:
        db.add(FaultAck(fault_id=fault.id, acked_by=principal.id, acked_ms=common.now_ms(),
                        note=(request.form.get("note") or "")[:500] or None))
        db.commit()
        logger.info("user=%s acknowledged fault %s (%s) on rx=%s", principal.username, fault.id, fault.code, rx.id)
    return redirect(back + sep + urlencode({"msg": _("Đã tiếp nhận sự cố.")}))
