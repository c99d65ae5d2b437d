"""What every page shares: the login check, the clock, local time, online state, the scope of a query.

Page modules import this module and no other page module. They read the clock as
``common.now_ms()`` (never a copy imported by name), so one patch of
``controller.pages.common.now_ms`` moves every page's clock.
"""

from __future__ import annotations

from datetime import date, datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from flask import abort, current_app, redirect, request, url_for
from sqlalchemy import select

from controller import auth
from controller.db import get_db
from controller.i18n import N_
from controller.labels import airtime
from controller.models import Area, Receiver
from controller.services import areas, health
from schedules.events import now_ms

__all__ = ["FAULT_STATE_VI", "STALE_MS", "int_arg", "is_online", "local_time", "login_required", "now_ms",
           "page_url", "receiver_or_404", "scope", "today", "tz"]

STALE_MS = 90_000  # three missed heartbeats

FAULT_STATE_VI = {"open": N_("Chưa xử lý"), "acked": N_("Đã tiếp nhận"), "resolved": N_("Đã khắc phục")}


def local_time(ms: int | None, fmt: str = "%d/%m/%Y %H:%M:%S") -> str:
    """Epoch ms -> local time text (dd/mm/yyyy, 24 h)."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, tz()).strftime(fmt)


def login_required() -> auth.Principal:
    """The logged-in user, or a redirect to the login page (raised)."""
    principal = auth.web_principal()
    if principal is None:
        abort(redirect(url_for("login.login", next=request.path)))
    return principal


def is_online(rx: Receiver, now: int) -> bool | None:
    """Online and heard from within three heartbeats; None (unknown) while the controller has lost the broker."""
    if health.broker_lost_since() is not None:
        return None
    return bool(rx.online and rx.last_seen_ms and now - rx.last_seen_ms < STALE_MS)


def tz() -> ZoneInfo:
    """The controller's time zone (people write and read times in it)."""
    return ZoneInfo(current_app.config["TIMEZONE"])


def today() -> date:
    """Today's date in the controller's time zone, by the pages' clock."""
    return datetime.fromtimestamp(now_ms() / 1000, tz()).date()


def int_arg(name: str, default: int, low: int = 1, high: int = 10_000) -> int:
    """An integer query argument clamped to [low, high]; ``default`` when it is not a number."""
    try:
        return max(low, min(high, int(request.args.get(name, default))))
    except ValueError:
        return default


def scope(principal: auth.Principal) -> tuple[set[str], str | None, list[Area]]:
    """(visible area ids, chosen area or None, the areas to choose from); 404 for an area out of scope."""
    db = get_db()
    visible = areas.subtree_ids(db, principal.area_id)
    area_list = list(db.scalars(select(Area).where(Area.id.in_(visible)).order_by(Area.id)).all())
    chosen = request.args.get("area") or None
    if chosen:
        if chosen not in visible:
            abort(404)
        visible = areas.subtree_ids(db, chosen)
    return visible, chosen, area_list


def receiver_or_404(principal: auth.Principal, rx_id: str) -> Receiver:
    """The receiver, or 404 when it is unknown or outside the user's areas (the same answer)."""
    db = get_db()
    rx = db.get(Receiver, rx_id)
    if rx is None or not principal.may_touch(db, rx.area_id):
        abort(404)
    return rx


def page_url(**changes: object) -> str:
    """This page's URL with some query arguments changed (empty ones dropped)."""
    args: dict[str, object] = {k: v for k, v in request.args.items() if v}
    args.update({k: v for k, v in changes.items()})
    return request.path + "?" + urlencode({k: v for k, v in args.items() if v not in (None, "")})


def _hours_label(hours: float) -> str:
    """'2.5 giờ', '12 phút', '40 giây' (a short bulletin that played is not '0 phút'): :func:`airtime`."""
    return airtime(hours * 3_600_000)
