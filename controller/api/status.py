"""JSON for the health dashboard: clusters, one cluster's history, faults, as-run reports."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app, jsonify, request
from sqlalchemy import func, select

from controller.api import bp, check_area, json_body, receiver_in_scope, require
from controller.db import get_db
from controller.errors import ApiError
from controller.models import Fault, FaultAck, Receiver, User
from controller.services import areas, faults, health, reports
from schedules.events import now_ms


def _visible(principal) -> set[str]:
    db = get_db()
    area = request.args.get("area")
    if area:
        check_area(principal, area)
        return areas.subtree_ids(db, area)
    return areas.subtree_ids(db, principal.area_id)


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "request.bad_field", f"{name} must be an integer",
                       f"Tham số {name} phải là số nguyên.") from None
    if not low <= value <= high:
        raise ApiError(400, "request.bad_field", f"{name} must be between {low} and {high}",
                       f"Tham số {name} phải từ {low} đến {high}.")
    return value


def _day(name: str) -> date | None:
    raw = request.args.get(name)
    if not raw:
        return None
    for fmt in ("%Y-%m-%d", "%d/%m/%Y"):
        try:
            return datetime.strptime(raw, fmt).date()
        except ValueError:
            continue
    raise ApiError(400, "request.bad_date", f"{name} must be YYYY-MM-DD or DD/MM/YYYY",
                   f"Ngày {name} không hợp lệ (dd/mm/yyyy).")


@bp.get("/clusters")
@require("viewer")
def api_clusters(principal):
    """Cluster table: ?status=ok|fault|offline|unknown&area=&q=&sort=&dir=desc&page=&per_page=.

    While the controller has lost the broker every row is ``unknown`` (with ``unknown_since_ms``).
    """
    status = request.args.get("status") or None
    if status is not None and status not in health.STATUSES:
        raise ApiError(400, "request.bad_field", "status must be ok, fault, offline or unknown",
                       "Tình trạng phải là ok, fault, offline hoặc unknown.")
    sort = request.args.get("sort") or "name"
    if sort not in health.SORTS:
        raise ApiError(400, "request.bad_field", f"sort must be one of {', '.join(health.SORTS)}",
                       "Cách sắp xếp không hợp lệ.")
    visible = _visible(principal)
    now = now_ms()
    table = health.clusters(get_db(), visible, now, status=status, q=request.args.get("q"), sort=sort,
                            desc=request.args.get("dir") == "desc", page=_int("page", 1, 1, 1_000_000),
                            per_page=_int("per_page", 50, 1, 500))
    return jsonify({"summary": health.summary(get_db(), visible, now), "total": table.total, "page": table.page,
                    "pages": table.pages, "per_page": table.per_page,
                    "clusters": [{k: r[k] for k in ("id", "name", "area_id", "status", "last_seen_ms", "lat", "lon",
                                                    "offset", "signal", "signal_pct", "network", "network_tech",
                                                    "version", "volume", "temperature", "playing", "unknown_since_ms")}
                                 for r in table.rows]})


@bp.get("/clusters/<rx_id>/history")
@require("viewer")
def api_cluster_history(principal, rx_id: str):
    """One cluster's heartbeat history (15-minute buckets): ?hours=24 (up to 31 days)."""
    db = get_db()
    rx = receiver_in_scope(principal, rx_id)
    now = now_ms()
    hours = _int("hours", 24, 1, 31 * 24)
    return jsonify({"rx": rx.id, "bucket_ms": health.BUCKET_MS,
                    "history": health.history(db, rx.id, now - hours * 3600_000, now)})


def _fault_json(fault: Fault, ack: FaultAck | None, who: str | None, rx: Receiver) -> dict:
    return {"id": fault.id, "rx": rx.id, "rx_name": rx.name, "area": rx.area_id, "code": fault.code,
            "label_vi": health.FAULT_VI.get(fault.code, fault.code), "detail": fault.detail,
            "raised_ms": fault.raised_ms, "cleared_ms": fault.cleared_ms, "state": health.fault_state(fault, ack),
            "acked_by": who, "acked_ms": ack.acked_ms if ack else None,
            "repair_ms": fault.cleared_ms - fault.raised_ms if fault.cleared_ms else None}


@bp.get("/faults")
@require("viewer")
def api_faults(principal):
    """Faults in scope: ?state=open|acked|resolved|all&area=&page=&per_page=, plus statistics."""
    state = request.args.get("state") or "open"
    if state not in ("open", "acked", "resolved", "all"):
        raise ApiError(400, "request.bad_field", "state must be open, acked, resolved or all",
                       "Tình trạng sự cố không hợp lệ.")
    db = get_db()
    visible = _visible(principal)
    per_page = _int("per_page", 50, 1, 500)
    page = _int("page", 1, 1, 1_000_000)
    q = faults.fault_query(visible, state)
    total = db.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = db.execute(q.order_by(Fault.raised_ms.desc()).limit(per_page).offset((page - 1) * per_page)).all()
    now = now_ms()
    days = _int("days", 7, 1, 90)
    since = now - days * 86_400_000
    share = health.working_share(db, visible, since - since % 3600_000, now, 3600_000 if days <= 7 else 86_400_000)
    return jsonify({"total": total, "page": page, "per_page": per_page,
                    "stats": health.fault_stats(db, visible, since),
                    "working_share": [{"ts_ms": ms, "share": round(v, 4)} for ms, v in share],
                    "faults": [_fault_json(*r) for r in rows]})


@bp.post("/faults/<int:fault_id>/ack")
@require("operator")
def api_ack_fault(principal, fault_id: int):
    """Acknowledge a fault (operators and above, in their area); idempotent."""
    db = get_db()
    fault = db.get(Fault, fault_id)
    rx = db.get(Receiver, fault.rx_id) if fault else None
    if fault is None or rx is None or not principal.may_touch(db, rx.area_id):
        raise ApiError(404, "fault.not_found", f"no fault {fault_id}", "Không tìm thấy sự cố.")
    ack = db.get(FaultAck, fault.id)
    if ack is None:
        note = json_body(optional=True).get("note")
        ack = FaultAck(fault_id=fault.id, acked_by=principal.id, acked_ms=now_ms(),
                       note=str(note)[:500] if note else None)
        db.add(ack)
        db.commit()
        current_app.logger.info("user=%s acknowledged fault %s on rx=%s", principal.username, fault.id, rx.id)
    user = db.get(User, ack.acked_by) if ack.acked_by else None
    return jsonify({"fault": _fault_json(fault, ack, user.username if user else None, rx)})


@bp.get("/reports/as-run")
@require("viewer")
def api_asrun(principal):
    """As-run report: ?area=&from=&to=&period=day|week|month&format=json|csv&page=&per_page=."""
    db = get_db()
    tz = ZoneInfo(current_app.config["TIMEZONE"])
    visible = _visible(principal)
    last = _day("to") or datetime.now(tz).date()
    first = _day("from") or last - timedelta(days=6)
    if first > last:
        raise ApiError(400, "request.bad_range", "from is after to", "Ngày bắt đầu sau ngày kết thúc.")
    if (last - first).days > 366:
        raise ApiError(400, "request.bad_range", "at most 367 days", "Báo cáo tối đa một năm.")
    since, until = reports.day_range(first, last, tz)
    reports.refresh(db)
    fmt = request.args.get("format") or "json"
    if fmt == "csv":
        name = f"as-run_{first:%Y%m%d}-{last:%Y%m%d}.csv"
        return reports.csv_download(visible, since, until, tz, name)
    if fmt != "json":
        raise ApiError(400, "request.bad_field", "format must be json or csv", "Định dạng phải là json hoặc csv.")
    period = request.args.get("period") or "day"
    if period not in ("day", "week", "month"):
        raise ApiError(400, "request.bad_field", "period must be day, week or month",
                       "Kỳ tổng hợp phải là ngày, tuần hoặc tháng.")
    per_page = _int("per_page", 100, 1, 1000)
    page = _int("page", 1, 1, 1_000_000)
    rows, total = reports.problem_rows(db, visible, since, until, page=page, per_page=per_page,
                                       outcomes=reports.OUTCOMES)
    return jsonify({"from": first.isoformat(), "to": last.isoformat(), "since_ms": since, "until_ms": until,
                    "counts": reports.outcome_counts(db, visible, since, until),
                    "hours": reports.broadcast_hours(db, visible, since, until, tz, period),
                    "occurrences": reports.occurrences(db, visible, since, until, limit=500),
                    "total": total, "page": page, "per_page": per_page,
                    "rows": [{k: r[k] for k in ("occurrence_id", "programme_item_id", "rx_id", "planned_start_ms",
                                                "ts_ms", "outcome", "played_ms", "planned_ms", "pct", "reason",
                                                "broadcast")}
                             for r in rows]})
