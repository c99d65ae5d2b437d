"""The as-run report pages: outcomes, broadcast hours per area and period, the CSV, a printable report."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from flask import Blueprint, render_template, request
from flask_babel import gettext as _
from sqlalchemy import select

from controller.db import get_db
from controller.labels import airtime
from controller.models import Receiver
from controller.pages import common
from controller.services import reports

bp = Blueprint("reports", __name__)


def _parse_day(text: str | None) -> date | None:
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime((text or "").strip(), fmt).date()
        except ValueError:
            continue
    return None


def _report_range() -> tuple[date, date, str | None]:
    today = common.today()
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
    visible, chosen, area_list = common.scope(principal)
    tz = common.tz()
    first, last, error = _report_range()
    since, until = reports.day_range(first, last, tz)
    period = request.args.get("period") if request.args.get("period") in ("day", "week", "month") else "day"
    reports.refresh(db)
    return db, visible, chosen, area_list, tz, first, last, error, since, until, period


@bp.get("/reports")
def reports_page():
    """As-run report: outcomes, broadcast hours per area and period, each occurrence, what went wrong."""
    principal = common.login_required()
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
    problems, total = reports.problem_rows(db, visible, since, until, page=common.int_arg("page", 1), per_page=per_page,
                                           outcomes=chosen_outcomes)
    names = {a.id: a.name for a in area_list}
    rx_names = dict(db.execute(select(Receiver.id, Receiver.name).where(
        Receiver.id.in_({p["rx_id"] for p in problems}))).all()) if problems else {}
    item_titles = reports.titles(db, {p["programme_item_id"] for p in problems if p["programme_item_id"]})
    return render_template("reports.html", principal=principal, counts=counts, hours=hours, occ=occ,
                           problems=problems, total=total, page=common.int_arg("page", 1), outcome=outcome,
                           pages=max(1, -(-total // per_page)), first=first, last=last, error=error, period=period,
                           chosen=chosen, areas=area_list, names=names, rx_names=rx_names, titles=item_titles,
                           outcome_vi=reports.OUTCOME_VI,
                           reason_vi=reports.REASON_VI, period_label=reports.period_label, local_time=common.local_time,
                           page_url=common.page_url, bars=_hour_bars(hours, names))


def _hour_bars(hours: dict, names: dict[str, str]) -> list[dict]:
    """Bars for the broadcast-hours picture: one per area, its total over the range (summed in ms, unrounded)."""
    totals = [(a, sum(hours["ms"][a].values())) for a in hours["areas"]]
    top = max((t for _, t in totals), default=0) or 1
    return [{"area": names.get(a, a), "hours": round(t / 3_600_000, 2), "pct": round(100 * t / top, 1),
             "label": airtime(t)} for a, t in totals]




@bp.get("/reports/as-run.csv")
def reports_csv():
    """The full as-run log of the range as CSV (streamed)."""
    principal = common.login_required()
    db, visible, chosen, _areas, tz, first, last, _error, since, until, _period = _report_query(principal)
    name = f"as-run_{(chosen or 'all').replace('/', '-')}_{first:%Y%m%d}-{last:%Y%m%d}.csv"
    return reports.csv_download(visible, since, until, tz, name)


@bp.get("/reports/print")
def reports_print():
    """A printable as-run report a district can file: totals, hours per area, every occurrence."""
    principal = common.login_required()
    db, visible, chosen, area_list, tz, first, last, _error, since, until, period = _report_query(principal)
    names = {a.id: a.name for a in area_list}
    return render_template("report_print.html", principal=principal,
                           counts=reports.outcome_counts(db, visible, since, until),
                           hours=reports.broadcast_hours(db, visible, since, until, tz, period),
                           occ=reports.occurrences(db, visible, since, until, limit=2000),
                           first=first, last=last, chosen=chosen, names=names, outcome_vi=reports.OUTCOME_VI,
                           reason_vi=reports.REASON_VI,
                           period_label=reports.period_label, local_time=common.local_time, printed=common.now_ms())
