"""Phát khẩn cấp: compose an emergency or a drill in a few taps, then watch every cluster answer.

``/alerts`` is the compose screen (mode first, as two big buttons of different colours, then
targets, content and options with the user's own commune and the first prepared text chosen,
then a confirm step that names the count of clusters) and the list of recent alerts.
``/alerts/<id>`` is the live view: counts per area as bars, every cluster's state and reason,
stop, correction and (for a second person) confirm; ``/alerts/<id>/events`` streams its status as
server-sent events whenever a cluster answers. The screens only read: every change goes through
the JSON API (:mod:`controller.api.alerts`) with the session and its CSRF header.
"""

from __future__ import annotations

import json
import threading
import time

from flask import Blueprint, Response, abort, current_app, render_template, stream_with_context
from sqlalchemy import select

from controller.db import get_db, session_scope
from controller.models import ALERT_OPEN, Alert, Area, Bulletin, ProgrammeItem, Receiver
from controller.pages import common
from controller.runtime import services
from controller.services import areas
from controller.services import emergencies as em

bp = Blueprint("alerts", __name__)


MAX_STREAMS = 24
"""Live views streamed at once; beyond that a view gets one snapshot and comes back in 5 s, so the web
server's threads (48, controller/cli.py) are never all held by phones left open on a live view."""
_streams = threading.BoundedSemaphore(MAX_STREAMS)

STREAM_LIFETIME_S = 55.0
"""A live view's event stream closes after this long and the browser reconnects (a waitress thread is not
held forever by a phone left open)."""


def _visible_alert(principal, alert_id: str) -> Alert:
    db = get_db()
    alert = db.get(Alert, alert_id[:40])
    if alert is None or not principal.may_touch(db, alert.area_id):
        abort(404)
    return alert


@bp.get("/alerts")
def alerts_page():
    """The compose screen (for those who may alert) and the recent alerts."""
    principal = common.login_required()
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    area_rows = list(db.scalars(select(Area).where(Area.id.in_(visible)).order_by(Area.id)))
    recent = list(db.scalars(select(Alert).where(Alert.area_id.in_(visible))
                             .order_by(Alert.created_ms.desc()).limit(30)))
    templates = em.templates_for(db, principal) if principal.may_alert else []
    bulletins = list(db.scalars(select(Bulletin).where(Bulletin.area_id.in_(visible), Bulletin.status == "ready")
                                .order_by(Bulletin.created_ms.desc()).limit(50))) if principal.may_alert else []
    relaying = principal.at_least("approver")
    sources = em.stream_sources_for(db, principal) if principal.may_alert or relaying else []
    default_area = principal.area_id if principal.area_id in visible else None
    labels = {a.id: em.area_label(a) for a in area_rows}
    svc = services()
    clusters = list(db.scalars(select(Receiver).where(Receiver.area_id.in_(visible), Receiver.retired_ms.is_(None))
                               .order_by(Receiver.area_id, Receiver.name).limit(1000))) if principal.may_alert else []
    own_templates = [t for t in templates if t.area_id is not None] if principal.at_least("manager") else []
    now = common.now_ms()
    relays = [r for r in db.scalars(select(ProgrammeItem).where(
        ProgrammeItem.kind == "relay", ProgrammeItem.status == "approved", ProgrammeItem.mode == "once",
        ProgrammeItem.area_id.in_(visible), ProgrammeItem.start_ms.is_not(None)))
        if r.start_ms is not None and r.start_ms + r.duration_ms > now] if relaying else []
    return render_template("alerts.html", principal=principal, areas=area_rows, labels=labels, recent=recent,
                           templates=templates, bulletins=bulletins, sources=sources, default_area=default_area,
                           local_time=common.local_time, relaying=relaying, relays=relays,
                           live_available=bool(svc is not None and svc.live.available), clusters=clusters,
                           own_templates=own_templates,
                           tts_fallback=principal.may_alert and em.tts_would_fall_back(current_app.config))


@bp.get("/alerts/<alert_id>")
def alert_page(alert_id: str):
    """The live view of one alert."""
    principal = common.login_required()
    alert = _visible_alert(principal, alert_id)
    status = em.live_status(get_db(), alert)
    return render_template("alert.html", principal=principal, alert=alert, status=status,
                           status_json=json.dumps(status, ensure_ascii=False), local_time=common.local_time,
                           corrects=get_db().get(Alert, alert.corrects_id) if alert.corrects_id else None)


@bp.get("/alerts/<alert_id>/events")
def alert_events(alert_id: str):
    """Server-sent events: the alert's status (JSON) now and whenever it changes, for up to a minute."""
    principal = common.login_required()
    alert = _visible_alert(principal, alert_id)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    svc = services()
    worker = svc.emergencies if svc is not None else None
    key = alert.id

    def snapshot() -> tuple[str, bool]:
        with session_scope(app) as db:
            row = db.get(Alert, key)
            if row is None:
                return "{}", True
            # Over, and the clusters' last answers (stopped, finished) had time to come in.
            settled = row.status not in ALERT_OPEN and (row.ended_ms is None
                                                        or common.now_ms() - row.ended_ms > em.SETTLE_MS)
            return json.dumps(em.live_status(db, row), ensure_ascii=False), settled

    def stream():
        if not _streams.acquire(blocking=False):
            yield "retry: 5000\n\n"
            yield f"event: status\ndata: {snapshot()[0]}\n\n"
            return
        try:
            yield from follow()
        finally:
            _streams.release()

    def follow():
        last = ""
        ends = time.monotonic() + STREAM_LIFETIME_S
        yield "retry: 1000\n\n"
        while time.monotonic() < ends:
            seen = worker.generation if worker is not None else 0
            data, over = snapshot()
            if data != last:
                last = data
                yield f"event: status\ndata: {data}\n\n"
            else:
                yield ": keep-alive\n\n"
            if over:  # the last word was said; answers that still come in show on the next page load
                yield "event: over\ndata: {}\n\n"
                return
            if worker is None:
                time.sleep(1.0)
                continue
            with worker.changed:
                if worker.generation == seen:
                    worker.changed.wait(timeout=2.0)

    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
