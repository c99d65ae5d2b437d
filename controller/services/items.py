"""The programme item parser: a request body -> the column values of a programme item (nothing is written).

The API's create and update views call :func:`parse_item`; its refusals are :class:`ApiError` (400, 409, 422)
or :class:`ProgrammeError` with the codes the API documents.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from controller import auth
from controller.errors import ApiError
from controller.models import Area, Bulletin, ProgrammeItem, Receiver
from controller.services import areas, programme
from controller.services.programme import entry_from_row, time_to_seconds, weekdays_to_mask
from schedules.programme import KINDS, MODES, ProgrammeError, parse_hhmm, validate_entry

MAX_SCHEDULE_AHEAD_MS = 400 * 24 * 3600 * 1000
ITEM_FIELDS = ("kind", "bulletin_id", "fallback_bulletin_id", "relay_url", "duration_s", "title", "area", "targets",
               "exclude", "priority", "session", "at", "start", "start_ms", "mode", "date", "weekdays", "date_from",
               "date_to", "repeat", "gap_s", "order")


def parse_local_time(text: str, tz: str) -> int:
    """``2026-11-22 17:30:05`` (or ISO with ``T``) in the local zone -> UTC epoch ms."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ApiError(400, "schedule.bad_time", f"start {text!r} is not YYYY-MM-DD HH:MM[:SS]",
                       "Thời gian phát không đúng dạng NNNN-TT-NN GG:PP.") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ZoneInfo(tz))
    return int(dt.timestamp() * 1000)


def parse_date(value: Any, name: str) -> date | None:
    """``YYYY-MM-DD`` -> a date; None when empty; 400 ``request.bad_date`` otherwise."""
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise ApiError(400, "request.bad_date", f"{name} must be YYYY-MM-DD", f"Ngày ({name}) không hợp lệ.") from exc


def _int(data: dict, name: str, default: int | None = None) -> int:
    value = data.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(400, "request.bad_field", f"{name} must be an integer", f"Trường {name} phải là số nguyên.")
    return value


def _str_list(data: dict, name: str) -> list[str]:
    value = data.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value) or len(value) > 500:
        raise ApiError(400, "request.bad_field", f"{name} must be a list of ids", f"Trường {name} không hợp lệ.")
    return sorted(set(value))


def parse_item(principal: auth.Principal, db: Session, data: dict, now: int, tz: str, *,
               bulletin_of: Callable[[int], Bulletin], area_of: Callable[[str], Area]) -> dict:
    """Validate a request body as of ``now`` in zone ``tz``; returns the column values of the item (nothing is
    written). ``bulletin_of`` and ``area_of`` look an id up within the caller's areas, or raise (the API's
    404s); whether the item can still play is checked once it is a row (:func:`programme.place`)."""
    unknown = set(data) - set(ITEM_FIELDS)
    if unknown:
        raise ApiError(400, "request.unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}",
                       "Dữ liệu có trường không hợp lệ.")
    bulletin = bulletin_of(_int(data, "bulletin_id")) if data.get("bulletin_id") is not None else None
    kind = str(data.get("kind") or ("relay" if data.get("relay_url") else
                                    "text" if bulletin is not None and bulletin.kind == "text" else "audio"))
    if kind not in KINDS:
        raise ApiError(400, "item.bad_kind", f"kind must be one of {', '.join(KINDS)}", "Loại mục không hợp lệ.")
    fallback = None
    if kind == "separator" and bulletin is None:
        duration_ms = _int(data, "duration_s") * 1000  # silence between items
    elif kind == "relay":
        duration_ms = _int(data, "duration_s") * 1000
        if data.get("fallback_bulletin_id") is not None:
            fallback = bulletin_of(_int(data, "fallback_bulletin_id"))
        bulletin = None
    else:
        if bulletin is None:
            raise ApiError(400, "item.no_bulletin", "bulletin_id is required", "Cần chọn bản tin.")
        if bulletin.status != "ready" or bulletin.media is None:
            raise ApiError(409, "bulletin.not_ready", f"bulletin is {bulletin.status}, not ready",
                           "Bản tin chưa xử lý xong, chưa thể xếp lịch.")
        duration_ms = bulletin.media.duration_ms
    owner = area_of(str(data.get("area") or (bulletin.area_id if bulletin else principal.area_id or "")))
    targets = _str_list(data, "targets") or [owner.id]
    for t in targets:
        area_of(t)
    exclude = _str_list(data, "exclude")
    for rx_id in exclude:
        rx = db.get(Receiver, rx_id)
        if rx is None or not any(areas.is_within(db, rx.area_id, t) for t in targets):
            raise ApiError(400, "item.bad_exclude", f"receiver {rx_id!r} is not in the target areas",
                           "Cụm loa loại trừ không thuộc địa bàn đã chọn.")
    mode = str(data.get("mode") or "once")
    day = parse_date(data.get("date"), "date")
    at = None
    start_ms = None
    if "start" in data or "start_ms" in data:
        if "start_ms" in data:
            start_ms = _int(data, "start_ms")
        elif isinstance(data.get("start"), str):
            start_ms = parse_local_time(data["start"], tz)
        else:
            raise ApiError(400, "schedule.bad_time", "start must be local time text", "Cần chọn thời gian phát.")
        if start_ms < now:
            when = datetime.fromtimestamp(start_ms / 1000, ZoneInfo(tz)).strftime("%d/%m/%Y %H:%M")
            raise ApiError(422, "schedule.in_past", f"the start time has passed ({when})",
                           f"Thời gian phát đã qua ({when}).")
        if start_ms > now + MAX_SCHEDULE_AHEAD_MS:
            raise ApiError(422, "schedule.too_far", "the start time is more than 400 days ahead",
                           "Thời gian phát quá xa (hơn 400 ngày).")
        local = datetime.fromtimestamp(start_ms / 1000, ZoneInfo(tz))
        mode, day, at = "once", local.date(), local.time().replace(microsecond=0)
    elif data.get("at") is not None:
        at = parse_hhmm(str(data["at"]))
    session_key = str(data["session"]) if data.get("session") else None
    if session_key is not None and at is not None:
        raise ProgrammeError("item.bad_placement", "place the item either in a session or at a time, not both",
                             "Chọn buổi phát hoặc giờ phát cụ thể (một trong hai).")
    if session_key is None and at is None:
        raise ApiError(400, "schedule.bad_time", "give a session, a time of day (at) or a start",
                       "Cần chọn buổi phát hoặc giờ phát.")
    weekdays = data.get("weekdays") or []
    if not isinstance(weekdays, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in weekdays):
        raise ApiError(400, "item.bad_weekday", "weekdays are integers 0 (Monday) to 6 (Sunday)",
                       "Thứ trong tuần không hợp lệ.")
    if mode not in MODES:
        raise ApiError(400, "item.bad_mode", f"mode must be one of {', '.join(MODES)}", "Chế độ phát không hợp lệ.")
    date_from = parse_date(data.get("date_from"), "date_from")
    date_to = parse_date(data.get("date_to"), "date_to")
    values: dict[str, Any] = dict(  # the item's columns, of their several types
        kind=kind, title=(str(data["title"]).strip()[:300] or None) if data.get("title") else None,
        bulletin_id=bulletin.id if bulletin else None, fallback_bulletin_id=fallback.id if fallback else None,
        relay_url=str(data.get("relay_url") or "").strip()[:1000] or None if kind == "relay" else None,
        area_id=owner.id, targets=json.dumps(targets) if targets != [owner.id] else None,
        exclude=json.dumps(exclude) if exclude else None, duration_ms=duration_ms,
        priority=str(data.get("priority") or "normal"), session_key=session_key,
        at_s=time_to_seconds(at) if at is not None and session_key is None else None,
        mode=mode, day=day.isoformat() if day else None, weekdays=weekdays_to_mask(weekdays) if weekdays else 0,
        date_from=date_from, date_to=date_to,
        repeat_count=_int(data, "repeat", 1), repeat_gap_s=_int(data, "gap_s", 0), sort_order=_int(data, "order", 0),
        start_ms=start_ms,
    )
    if any(not 0 <= d <= 6 for d in weekdays):
        raise ApiError(400, "item.bad_weekday", "weekdays are 0 (Monday) to 6 (Sunday)", "Thứ trong tuần không hợp lệ.")
    probe = ProgrammeItem(**{**values, "date_from": date_from.isoformat() if date_from else None,
                             "date_to": date_to.isoformat() if date_to else None})
    probe.bulletin, probe.fallback = bulletin, fallback
    entry = entry_from_row(probe)
    validate_entry(entry)
    programme.check_sessions_of_targets(db, entry)
    values["date_from"] = probe.date_from
    values["date_to"] = probe.date_to
    return values
