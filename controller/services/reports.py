"""As-run reports: what each receiver played of each occurrence, broadcast hours, CSV export.

Outcomes per occurrence × receiver, from the events the receivers reported and the
missed plays the scheduler recorded:

- ``full``: ``playback.finished`` with at least the planned duration less a 2 s tolerance;
- ``partial``: ``playback.finished`` with less (the share played is given);
- ``failed``: ``playback.failed`` (the receiver's code and reason);
- ``missed``: a :class:`MissedPlay` (due, never started); its reason comes from the presence
  history over the play's window (:func:`controller.services.asrun.miss_reasons`);
- ``unfinished``: ``playback.started`` with no end reported (yet).

A play the receiver joined under way (``offset_ms`` > 0 in its start or finish) carries
``late_ms``, the offset it joined at. Airtime (``played_ms``) is what the receiver reports it
played, else the time from its start to its finish; it is summed in milliseconds and only the
pages round it (:func:`controller.labels.airtime`).

Reports read :class:`AsRunRecord` rows (one per occurrence × receiver, no JSON to parse) that
:func:`refresh` folds from the events incrementally; each report page refreshes first.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import Response, current_app
from sqlalchemy import (
    JSON,
    BigInteger,
    Select,
    String,
    case,
    cast,
    func,
    literal,
    null,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from controller.db import session_scope
from controller.i18n import N_
from controller.models import Alert, AsRunRecord, Bulletin, Event, MissedPlay, ProgrammeItem, Receiver
from controller.services import asrun
from schedules import vocab
from schedules.events import PLAYBACK_FAILED, PLAYBACK_FINISHED, PLAYBACK_STARTED

FULL_TOLERANCE_MS = 2000
OUTCOMES = ("full", "partial", "failed", "missed", "unfinished")
# Labels in Vietnamese (the CSV and the API); pages translate them where they show them.
OUTCOME_VI = {"full": N_("Phát đủ"), "partial": N_("Phát một phần"), "failed": N_("Phát lỗi"),
              "missed": N_("Không phát"), "unfinished": N_("Chưa báo kết thúc")}
REASON_VI = {
    "media.not_cached": N_("Chưa tải được bản tin về cụm"), "play.error": N_("Lỗi khi phát"),
    "decoder.missing": N_("Thiếu bộ giải mã"),
    # Why a due play never started (schedules.vocab.MISS_REASONS), from the presence history.
    vocab.MISS_OFFLINE: N_("Cụm mất kết nối lúc phát"),  # offline through the whole play
    vocab.MISS_NO_START: N_("Cụm trực tuyến nhưng không báo bắt đầu phát"),
    vocab.MISS_CAME_ONLINE: N_("Cụm kết nối lại khi bản tin đang phát nhưng không phát"),
    vocab.MISS_WENT_OFFLINE: N_("Cụm mất kết nối khi bản tin đang phát, không báo bắt đầu phát"),
    vocab.MISS_NO_MANIFEST: N_("Cụm chưa nhận lịch phát nào"),
    vocab.MISS_NOT_PROVISIONED: N_("Cụm chưa được đăng ký lúc phát"),
    "preempted": N_("Bị bản tin ưu tiên hơn chen ngang"),
    "stopped_by_command": N_("Bị dừng bằng lệnh"), "withdrawn": N_("Bị rút khỏi chương trình khi đang phát"),
    "stopped": N_("Cụm loa dừng giữa chừng (tắt hoặc khởi động lại)"),
    "decoder_error": N_("Lỗi giải mã"), "error": N_("Lỗi khi phát"),
    "decoder.no_audio": N_("Bản tin không có âm thanh"),
    "relay.unavailable": N_("Không thu được luồng phát trực tiếp"), "expired": N_("Quá giờ phát"),
    "media_end": "", "complete": "", "unknown": N_("Không rõ (cụm thu gửi mã lạ)"),
}
CSV_COLUMNS = ("occurrence_id", "programme_item_id", "title", "receiver", "receiver_name", "area",
               "planned_start", "reported_at", "outcome", "played_s", "planned_s", "played_pct", "reason",
               "reason_vi", "late_join_s", "broadcast")
BROADCASTS = ("programme", "emergency", "drill")
"""What an as-run row was: a programme play, a live emergency or a drill (never confused in a report)."""
BROADCAST_VI = {"programme": N_("Chương trình"), "emergency": N_("Khẩn cấp"), "drill": N_("Diễn tập")}
# A text cell starting with one of these is a formula to a spreadsheet: it gets a leading "'".
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


REFRESH_OVERLAP_MS = 2_000  # events received this close to the watermark are folded again (idempotent)


def _json_field(db: Session, key: str):
    """SQL: an integer field of the event body (JSON kept as text); BIGINT, since times are in ms."""
    if db.get_bind().dialect.name == "postgresql":
        # as_integer() casts to INTEGER, which a millisecond timestamp overflows on PostgreSQL.
        return cast(cast(Event.body, JSONB)[key].as_string(), BigInteger)
    return type_coerce(Event.body, JSON)[key].as_integer()


def _json_text(db: Session, key: str):
    if db.get_bind().dialect.name == "postgresql":
        return cast(Event.body, JSONB)[key].as_string()
    return type_coerce(Event.body, JSON)[key].as_string()


def refresh(db: Session) -> None:
    """Fold the playback events received since the last refresh into :class:`AsRunRecord` rows.

    One INSERT … SELECT … ON CONFLICT per call: the new events are grouped per occurrence and
    receiver, and a group replaces the stored row only when it ranks at least as high (a finish
    beats a start), so refreshing twice, or seeing events again, changes nothing.
    """
    watermark = db.scalar(select(func.max(AsRunRecord.received_ms)))
    newest = db.scalar(select(func.max(Event.received_ms)))
    if newest is None or watermark is not None and newest <= watermark:
        return  # nothing received since (both maxima come from indexes)
    since = (watermark - REFRESH_OVERLAP_MS) if watermark is not None else None
    is_finished = Event.type == PLAYBACK_FINISHED
    rank = func.max(case((is_finished, 3), (Event.type == PLAYBACK_FAILED, 2), else_=1))
    # What the receiver says it played, else the time from its start to its finish.
    started_at = func.min(case((Event.type == PLAYBACK_STARTED,
                                func.coalesce(_json_field(db, "actual_start_ms"), Event.ts_ms))))
    played = func.coalesce(func.max(case((is_finished, _json_field(db, "played_ms")))),
                           func.max(case((is_finished, Event.ts_ms))) - started_at)
    planned = func.max(case((is_finished, _json_field(db, "planned_duration_ms"))))
    reason = func.max(case((is_finished, _json_text(db, "end_reason")),
                           (Event.type == PLAYBACK_FAILED, _json_text(db, "code"))))
    planned_start = func.min(func.coalesce(_json_field(db, "planned_start_ms"), Event.ts_ms))
    outcome = case((rank == 3, case((played >= planned - FULL_TOLERANCE_MS, "full"), else_="partial")),
                   (rank == 2, "failed"), else_="unfinished")
    area = select(Receiver.area_id).where(Receiver.id == Event.rx_id).scalar_subquery()
    # Expressions, not bare columns, so the planner reads the received_ms index and nothing else
    # (a join with receivers, or grouping on the item_id index, would read every event).
    occ, rx = Event.item_id + "", Event.rx_id + ""
    source = (select(occ, rx, func.max(area), func.max(Event.programme_item_id),
                     planned_start, func.max(Event.ts_ms), func.max(Event.received_ms), rank, outcome, played,
                     planned, func.substr(reason, 1, 200))
              .where((Event.type + "").in_((PLAYBACK_STARTED, PLAYBACK_FINISHED, PLAYBACK_FAILED)),
                     Event.item_id.is_not(None), Event.received_ms >= (since if since is not None else 0))
              .group_by(occ, rx))
    columns = ["occurrence_id", "rx_id", "area_id", "programme_item_id", "planned_start_ms", "reported_ms",
               "received_ms", "rank", "outcome", "played_ms", "planned_ms", "reason"]
    dialect = db.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(AsRunRecord).from_select(columns, source)
    stmt = stmt.on_conflict_do_update(
        index_elements=["occurrence_id", "rx_id"],
        set_={c: getattr(stmt.excluded, c) for c in columns[2:]},
        where=stmt.excluded.rank >= AsRunRecord.rank)
    db.execute(stmt)
    db.commit()


def asrun_select(db: Session, visible: set[str], since_ms: int, until_ms: int,
                 outcomes: tuple[str, ...] = OUTCOMES, rx_id: str | None = None):
    """A SELECT of every as-run row planned in ``[since, until)`` for receivers in ``visible`` areas.

    Columns: occurrence_id, programme_item_id, rx_id, planned_start_ms, ts_ms, outcome,
    played_ms, planned_ms, reason. Call :func:`refresh` first to include the newest events.
    """
    reported = [o for o in outcomes if o != "missed"]
    parts: list[Select[*tuple[Any, ...]]] = []
    if reported:
        q = select(AsRunRecord.occurrence_id.label("occurrence_id"),
                   AsRunRecord.programme_item_id.label("programme_item_id"), AsRunRecord.rx_id.label("rx_id"),
                   AsRunRecord.planned_start_ms.label("planned_start_ms"), AsRunRecord.reported_ms.label("ts_ms"),
                   AsRunRecord.outcome.label("outcome"), AsRunRecord.played_ms.label("played_ms"),
                   AsRunRecord.planned_ms.label("planned_ms"), AsRunRecord.reason.label("reason")).where(
            AsRunRecord.area_id.in_(visible), AsRunRecord.planned_start_ms >= since_ms,
            AsRunRecord.planned_start_ms < until_ms)
        if len(reported) < len(OUTCOMES) - 1:
            q = q.where(AsRunRecord.outcome.in_(reported))
        if rx_id is not None:
            q = q.where(AsRunRecord.rx_id == rx_id)
        parts.append(q)
    if "missed" in outcomes:
        in_area = select(Receiver.id).where(Receiver.area_id.in_(visible))
        if rx_id is not None:
            in_area = in_area.where(Receiver.id == rx_id)
        # Labelled: with no other part (only missed plays asked for) these name the columns.
        parts.append(select(MissedPlay.occurrence_id, MissedPlay.programme_item_id, MissedPlay.rx_id,
                            MissedPlay.planned_start_ms, MissedPlay.detected_ms.label("ts_ms"),
                            literal("missed").label("outcome"), literal(0).label("played_ms"),
                            null().label("planned_ms"), cast(null(), String).label("reason")).where(
            MissedPlay.planned_start_ms >= since_ms, MissedPlay.planned_start_ms < until_ms,
            MissedPlay.rx_id.in_(in_area)))
    if not parts:
        parts.append(select(*[null()] * 9).where(literal(False)))
    return union_all(*parts) if len(parts) > 1 else parts[0]


def outcome_counts(db: Session, visible: set[str], since_ms: int, until_ms: int) -> dict[str, int]:
    """How many plays of each outcome in the range."""
    sub = asrun_select(db, visible, since_ms, until_ms).subquery()
    counts: dict[str, int] = {outcome: n for outcome, n in
                              db.execute(select(sub.c.outcome, func.count()).group_by(sub.c.outcome))}
    return {o: int(counts.get(o, 0)) for o in OUTCOMES}


def problem_rows(db: Session, visible: set[str], since_ms: int, until_ms: int, *, page: int = 1,
                 per_page: int = 100, outcomes: tuple[str, ...] = ("partial", "failed", "missed", "unfinished"),
                 rx_id: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """One page of as-run rows (by default only the plays that went wrong), newest first, and the total."""
    sub = asrun_select(db, visible, since_ms, until_ms, outcomes, rx_id).subquery()
    total = db.scalar(select(func.count()).select_from(sub)) or 0
    rows = db.execute(select(sub).order_by(sub.c.planned_start_ms.desc(), sub.c.rx_id)
                      .limit(per_page).offset((max(1, page) - 1) * per_page)).all()
    return decorate(db, [dict(r._mapping) for r in rows]), total


def decorate(db: Session, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add share played, why a missed play never started, the late-join offset and the Vietnamese
    reason to as-run rows (in place; returns them)."""
    missed = [r for r in rows if r["outcome"] == "missed"]
    for row, reason in zip(missed, asrun.miss_reasons(
            db, [(r["rx_id"], r["planned_start_ms"], r["programme_item_id"]) for r in missed]), strict=True):
        row["reason"] = reason
    late = join_offsets(db, {(r["occurrence_id"], r["rx_id"]) for r in rows
                             if r["outcome"] in ("full", "partial", "unfinished")})
    alerts = alert_kinds(db, {r["occurrence_id"] for r in rows if not r.get("programme_item_id")})
    for row in rows:
        kind, title = alerts.get(row["occurrence_id"], ("programme", None))
        row["broadcast"], row["alert_title"] = kind, title
        planned, played = row.get("planned_ms"), row.get("played_ms")
        row["pct"] = round(100 * played / planned) if planned and played is not None else None
        row["late_ms"] = late.get((row["occurrence_id"], row["rx_id"]))
        # Only the known reasons have a label: anything else is the receiver's data, not a message.
        row["reason_vi"] = REASON_VI.get(row.get("reason") or "") or None
    return rows


def join_offsets(db: Session, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """``(occurrence, rx)`` → how far into the item the receiver joined it, for the plays it joined
    under way: the ``offset_ms`` its ``playback.started`` (or ``finished``) reported, when over 0."""
    if not pairs:
        return {}
    offset = func.max(_json_field(db, "offset_ms"))
    rows = db.execute(select(Event.item_id, Event.rx_id, offset).where(
        Event.item_id.in_({o for o, _ in pairs}), Event.rx_id.in_({r for _, r in pairs}),
        Event.type.in_((PLAYBACK_STARTED, PLAYBACK_FINISHED))).group_by(Event.item_id, Event.rx_id)).all()
    return {(o, r): int(v) for o, r, v in rows if (o, r) in pairs and v is not None and int(v) > 0}


def titles(db: Session, item_ids: set[int]) -> dict[int, str]:
    """Programme item id → title (its own, else its bulletin's)."""
    if not item_ids:
        return {}
    rows = db.execute(select(ProgrammeItem.id, func.coalesce(ProgrammeItem.title, Bulletin.title))
                      .outerjoin(Bulletin, Bulletin.id == ProgrammeItem.bulletin_id)
                      .where(ProgrammeItem.id.in_(item_ids))).all()
    return {i: t or f"#{i}" for i, t in rows}


def alert_kinds(db: Session, occurrence_ids: set[str]) -> dict[str, tuple[str, str]]:
    """For the occurrences that are alerts (their id is the alert's): ``(emergency|drill, title)``."""
    ids = {o for o in occurrence_ids if o and o.startswith("al-")}
    if not ids:
        return {}
    rows = db.execute(select(Alert.id, Alert.mode, Alert.title).where(Alert.id.in_(ids))).all()
    return {i: ("drill" if mode == "drill" else "emergency", title) for i, mode, title in rows}


def occurrences(db: Session, visible: set[str], since_ms: int, until_ms: int,
                limit: int = 200) -> list[dict[str, Any]]:
    """Per occurrence, newest first: planned start and how many receivers played it fully, partly, not."""
    sub = asrun_select(db, visible, since_ms, until_ms).subquery()
    rows = db.execute(
        select(sub.c.occurrence_id, func.max(sub.c.programme_item_id), func.min(sub.c.planned_start_ms),
               *[func.sum(case((sub.c.outcome == o, 1), else_=0)) for o in OUTCOMES])
        .group_by(sub.c.occurrence_id).order_by(func.min(sub.c.planned_start_ms).desc()).limit(limit)).all()
    names = titles(db, {r[1] for r in rows if r[1]})
    alerts = alert_kinds(db, {r[0] for r in rows if not r[1]})
    return [{"occurrence_id": r[0], "programme_item_id": r[1],
             "title": alerts[r[0]][1] if r[0] in alerts else names.get(r[1], r[0]),
             "broadcast": alerts[r[0]][0] if r[0] in alerts else "programme",
             "planned_start_ms": r[2], **{o: int(r[3 + i] or 0) for i, o in enumerate(OUTCOMES)}} for r in rows]


def broadcast_hours(db: Session, visible: set[str], since_ms: int, until_ms: int, tz: ZoneInfo,
                    period: str = "day") -> dict[str, Any]:
    """Hours broadcast per area (the receivers' own areas) per day, ISO week or month.

    An area's hours count each occurrence once, at the longest any of its clusters played it;
    ``cluster_hours`` add up every cluster's playing time. ``ms`` and ``cluster_ms`` are the same
    sums in milliseconds, unrounded: pages show those (``hours`` are rounded to 0.01 h, so a
    20-second play is 36 seconds of them).
    """
    rows = db.execute(
        select(AsRunRecord.area_id, AsRunRecord.occurrence_id, func.min(AsRunRecord.planned_start_ms),
               func.max(AsRunRecord.played_ms), func.sum(AsRunRecord.played_ms))
        .where(AsRunRecord.outcome.in_(("full", "partial")), AsRunRecord.planned_start_ms >= since_ms,
               AsRunRecord.planned_start_ms < until_ms, AsRunRecord.area_id.in_(visible))
        .group_by(AsRunRecord.area_id, AsRunRecord.occurrence_id)).all()
    table: dict[tuple[str, str], list[int]] = {}
    for area_id, _item, ts, longest, total in rows:
        key = (area_id, period_key(datetime.fromtimestamp(ts / 1000, tz).date(), period))
        cell = table.setdefault(key, [0, 0])
        cell[0] += int(longest or 0)
        cell[1] += int(total or 0)  # PostgreSQL sums BIGINT as NUMERIC (a Decimal)
    periods = sorted({p for _, p in table})
    area_ids = sorted({a for a, _ in table})

    def sums(i: int) -> dict[str, dict[str, int]]:
        return {a: {p: table.get((a, p), [0, 0])[i] for p in periods} for a in area_ids}

    ms, cluster_ms = sums(0), sums(1)
    return {"periods": periods, "areas": area_ids,
            "hours": {a: {p: round(v / 3_600_000, 2) for p, v in row.items()} for a, row in ms.items()},
            "cluster_hours": {a: {p: round(v / 3_600_000, 2) for p, v in row.items()} for a, row in cluster_ms.items()},
            "ms": ms, "cluster_ms": cluster_ms}


def period_key(day: date, period: str) -> str:
    """dd/mm/yyyy for a day, 'Tuần ww/yyyy' for an ISO week, mm/yyyy for a month (sortable variants)."""
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{day:%Y-%m}"
    return day.isoformat()


def period_label(key: str) -> str:
    """A period key as people read it: 22/11/2026, Tuần 47/2026, Tháng 11/2026."""
    if "-W" in key:
        year, week = key.split("-W")
        return f"Tuần {week}/{year}"
    if key.count("-") == 1:
        year, month = key.split("-")
        return f"Tháng {month}/{year}"
    return date.fromisoformat(key).strftime("%d/%m/%Y")


def csv_lines(db: Session, visible: set[str], since_ms: int, until_ms: int, tz: ZoneInfo) -> Iterator[str]:
    """The full as-run log as CSV text, one line at a time (UTF-8 with BOM so spreadsheets read Vietnamese)."""
    sub = asrun_select(db, visible, since_ms, until_ms).subquery()
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    yield "\ufeff" + out.getvalue()
    rx_names = dict(db.execute(select(Receiver.id, Receiver.name).where(Receiver.area_id.in_(visible))).all())
    rx_areas = dict(db.execute(select(Receiver.id, Receiver.area_id).where(Receiver.area_id.in_(visible))).all())
    names: dict[int, str] = {}
    query = select(sub).order_by(sub.c.planned_start_ms, sub.c.rx_id).execution_options(yield_per=5000)
    for partition in db.execute(query).partitions():
        rows = [dict(r._mapping) for r in partition]
        names.update(titles(db, {r["programme_item_id"] for r in rows
                                 if r["programme_item_id"] and r["programme_item_id"] not in names}))
        out.seek(0)
        out.truncate()
        decorate(db, rows)
        for r in rows:
            planned, played, late = r["planned_ms"], r["played_ms"], r["late_ms"]
            writer.writerow([
                _text(r["occurrence_id"]), r["programme_item_id"] or "",
                _text(r["alert_title"] or names.get(r["programme_item_id"])),
                _text(r["rx_id"]), _text(rx_names.get(r["rx_id"])), _text(rx_areas.get(r["rx_id"])),
                _iso(r["planned_start_ms"], tz), _iso(r["ts_ms"], tz), _text(r["outcome"]),
                "" if played is None else round(played / 1000, 1), "" if planned is None else round(planned / 1000, 1),
                "" if r["pct"] is None else r["pct"], _text(r["reason"]), _text(r["reason_vi"]),
                "" if late is None else round(late / 1000, 1), r["broadcast"]])
        yield out.getvalue()


def _text(value: Any) -> str:
    """A text cell for the CSV, neutralised against formula injection (a leading ``'``)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _iso(ms: int | None, tz: ZoneInfo) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, tz).strftime("%d/%m/%Y %H:%M:%S")


def day_range(first: date, last: date, tz: ZoneInfo) -> tuple[int, int]:
    """Epoch ms of local midnight at ``first`` and the midnight after ``last``."""
    start = datetime.combine(first, datetime.min.time(), tz)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), tz)
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def csv_download(visible: set[str], since: int, until: int, tz: ZoneInfo, name: str) -> Response:
    """The as-run CSV, streamed from a session of its own, closed when the stream ends or is dropped.

    The lines are read after the request's teardown has closed its session; reading them on that
    session took a connection that went back to the pool only when the garbage collector found it.
    """
    # The app itself, not the proxy. Third-party gap: Flask types current_app as Flask, not as its LocalProxy.
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def lines():
        with session_scope(app) as db:
            yield from csv_lines(db, visible, since, until, tz)

    return Response(lines(), mimetype="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
