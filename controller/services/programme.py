"""The programme in the database: rows <-> planner values, validation, approval, audit."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.models import (
    Area,
    AuditEntry,
    Bulletin,
    ExtraSessionRow,
    ProgrammeItem,
    SessionTemplateRow,
)
from schedules.events import now_ms
from schedules.manifest import MediaRef
from schedules.planner import entry_of, last_start, next_opening, plan
from schedules.programme import (
    TIMEZONE,
    AreaNode,
    Entry,
    ExtraSession,
    Programme,
    ProgrammeError,
    SessionTemplate,
    default_templates,
)

LIVE_STATUSES = ("draft", "approved", "rejected")


def weekdays_to_mask(days: frozenset[int] | set[int] | list[int]) -> int:
    """{0, 2} -> 0b101."""
    return sum(1 << d for d in set(days))


def mask_to_weekdays(mask: int) -> frozenset[int]:
    """0b101 -> {0, 2}."""
    return frozenset(d for d in range(7) if mask & (1 << d))


def seconds_to_time(s: int) -> time:
    """Seconds after local midnight -> time."""
    return time(s // 3600, s % 3600 // 60, s % 60)


def time_to_seconds(t: time) -> int:
    """time -> seconds after local midnight."""
    return t.hour * 3600 + t.minute * 60 + t.second


def media_ref(b: Bulletin | None) -> MediaRef | None:
    """The wire reference of a ready bulletin's media, or None."""
    if b is None or b.media is None or b.status != "ready":
        return None
    m = b.media
    return MediaRef(sha256=m.sha256, path=f"/media/{m.sha256}.{m.format}", bytes=m.bytes,
                    duration_ms=m.duration_ms, format=m.format)


def targets_of(row: ProgrammeItem) -> list[str]:
    """The areas an item plays in (its owner area when none are listed)."""
    return json.loads(row.targets) if row.targets else [row.area_id]


def entry_from_row(row: ProgrammeItem) -> Entry:
    """The planner's view of a stored item."""
    media = media_ref(row.fallback if row.kind == "relay" else row.bulletin)
    title = row.title or (row.bulletin.title if row.bulletin else "") or row.relay_url or ""
    return Entry(
        id=row.id, kind=row.kind, title=title, priority=row.priority, duration_ms=row.duration_ms,
        areas=tuple(targets_of(row)), media=media, relay_url=row.relay_url,
        exclude=tuple(json.loads(row.exclude) if row.exclude else ()),
        session_key=row.session_key, at=seconds_to_time(row.at_s) if row.at_s is not None else None,
        order=row.sort_order, mode=row.mode, day=date.fromisoformat(row.day) if row.day else None,
        weekdays=mask_to_weekdays(row.weekdays),
        date_from=date.fromisoformat(row.date_from) if row.date_from else None,
        date_to=date.fromisoformat(row.date_to) if row.date_to else None,
        repeat=row.repeat_count, gap_ms=row.repeat_gap_s * 1000,
        since_ms=row.approved_ms if row.status == "approved" else None,
    )


def area_nodes(db: Session) -> list[AreaNode]:
    """The area tree as planner values."""
    return [AreaNode(a.id, a.level, a.parent_id) for a in db.scalars(select(Area))]


def templates_of(db: Session, area: Area) -> list[SessionTemplate]:
    """The sessions that apply to ``area``: its own rows, else its level's defaults."""
    rows = db.scalars(select(SessionTemplateRow).where(SessionTemplateRow.area_id == area.id)).all()
    if not rows:
        return default_templates().get(area.level, [])
    return sorted((SessionTemplate(r.key, r.name, seconds_to_time(r.start_s), seconds_to_time(r.end_s),
                                   mask_to_weekdays(r.weekdays)) for r in rows), key=lambda t: t.start)


def load_programme(db: Session) -> tuple[Programme, list[AreaNode]]:
    """Every approved item and every area's sessions, ready for :func:`schedules.planner.plan`."""
    rows = db.scalars(select(ProgrammeItem).where(ProgrammeItem.status == "approved")).all()
    entries = []
    for row in rows:
        e = entry_from_row(row)
        if e.kind in ("relay", "separator") or e.media is not None:
            entries.append(e)
    templates: dict[str, list[SessionTemplate]] = {}
    for r in db.scalars(select(SessionTemplateRow)):
        templates.setdefault(r.area_id, []).append(
            SessionTemplate(r.key, r.name, seconds_to_time(r.start_s), seconds_to_time(r.end_s),
                            mask_to_weekdays(r.weekdays)))
    extras = [ExtraSession(x.area_id, date.fromisoformat(x.day), x.key, x.name, seconds_to_time(x.start_s),
                           seconds_to_time(x.end_s)) for x in db.scalars(select(ExtraSessionRow))]
    return Programme(entries, templates, extras), area_nodes(db)


_AUDIT_DETAIL_MAX = 4000  # characters of JSON kept per line; callers pass validated values, this bounds the rest
_AUDIT_SECRET_KEYS = frozenset({"password", "secret", "token", "mqtt_password"})


def audit(db: Session, user_id: int | None, action: str, object_type: str, object_id: Any,
          detail: dict | None = None) -> None:
    """Append one line to the audit log (same transaction as the change it records).

    ``detail`` should hold the validated values the change used, not the request body. Whatever it holds,
    secrets (``password``, ``token``...) are dropped and a detail longer than ``_AUDIT_DETAIL_MAX``
    characters is replaced by its key names with ``"truncated": true``.
    """
    text = None
    if detail:
        kept = {str(k)[:60]: v for k, v in detail.items() if str(k).lower() not in _AUDIT_SECRET_KEYS}
        text = json.dumps(kept, ensure_ascii=False, default=str)
        if len(text) > _AUDIT_DETAIL_MAX:
            text = json.dumps({"truncated": True, "keys": sorted(kept)[:40]}, ensure_ascii=False)
    db.add(AuditEntry(ts_ms=now_ms(), user_id=user_id, action=action[:40], object_type=object_type[:40],
                      object_id=str(object_id)[:120], detail=text))


def session_exists(db: Session, area: Area, key: str, day: date | None) -> bool:
    """True when ``key`` names a template session of the area (held on ``day``'s weekday if a day is given),
    or an extra session (on ``day`` if given)."""
    if any(t.key == key and (day is None or day.weekday() in t.weekdays) for t in templates_of(db, area)):
        return True
    q = select(ExtraSessionRow).where(ExtraSessionRow.area_id == area.id, ExtraSessionRow.key == key)
    if day is not None:
        q = q.where(ExtraSessionRow.day == day.isoformat())
    return db.scalars(q).first() is not None


def check_sessions_of_targets(db: Session, entry: Entry) -> None:
    """Refuse a session placement that names a session some target area does not have."""
    if entry.session_key is None:
        return
    for area_id in entry.areas:
        area = db.get(Area, area_id)
        if area is None or not session_exists(db, area, entry.session_key, entry.day):
            on = f" on {entry.day.isoformat()}" if entry.day else ""
            on_vi = f" vào ngày {entry.day:%d/%m/%Y}" if entry.day else ""
            raise ProgrammeError("item.unknown_session",
                                 f"area {area_id!r} has no session {entry.session_key!r}{on}",
                                 f"Địa bàn {area.name if area else area_id} không có buổi phát "
                                 f"{entry.session_key}{on_vi}.")


class ApprovalRefused(ProgrammeError):
    """The user may not approve or reject this item (HTTP 403)."""


def can_approve(principal, db: Session, row: ProgrammeItem) -> bool:
    """Approver or stronger, with the item's owner area and every target in the user's subtree."""
    from controller.services import areas

    return principal.at_least("approver") and all(
        areas.is_within(db, a, principal.area_id) for a in [row.area_id, *targets_of(row)])


def decide(db: Session, principal, row: ProgrammeItem, approve: bool, reason: str = "", *,
           tz_name: str = TIMEZONE) -> Placement | None:
    """Approve or reject ``row`` for ``principal``, with the area's distinct-approver rule and an audit line.

    Approval places the item from now on (:func:`place`): it is refused (``ProgrammeError``) when none
    of its occurrences can still start or its session on air has no room left; the answer says where
    it goes. Approving an item that is already approved changes nothing (its placement stands) and
    answers None, as rejecting does.
    """
    if not can_approve(principal, db, row):
        raise ApprovalRefused("auth.forbidden", "your role or area does not allow this",
                              "Bạn không có quyền duyệt mục này.")
    owner = db.get(Area, row.area_id)
    if approve and owner is not None and owner.require_distinct_approver and row.created_by == principal.id:
        raise ApprovalRefused("approval.same_person", "this area requires another person to approve",
                              "Địa bàn này yêu cầu người duyệt khác người tạo.")
    if approve:
        if row.status == "approved":
            return None  # already in the programme: approving again must not move it
        now = now_ms()
        placement = place(db, row, now, now, tz_name)
        row.status, row.approved_by, row.approved_ms = "approved", principal.id, now
        audit(db, principal.id, "approve", "programme_item", row.id)
        return placement
    row.status, row.approved_by, row.approved_ms = "rejected", None, None
    audit(db, principal.id, "reject", "programme_item", row.id, {"reason": reason[:500]})
    return None


# ---- where an item plays from now on ---------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where an item's next occurrence starts, as the planner places it, and what to tell the operator.

    ``notice`` / ``notice_vi`` are set when the answer is not the plain one: the item's session is on
    air (it goes after what still plays there), or that session has no room left and a recurring
    item starts with its next occurrence.
    """

    start_ms: int | None
    notice: str | None = None
    notice_vi: str | None = None


def _local(ms: int, tz_name: str, fmt: str = "%d/%m/%Y %H:%M") -> str:
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(tz_name)).strftime(fmt)


def _clock(ms: int, tz_name: str) -> str:
    """HH:MM, or HH:MM:SS when the second is not zero (what is said is when it plays)."""
    return _local(ms, tz_name, "%H:%M" if ms % 60_000 == 0 else "%H:%M:%S")


def in_past_error(entry: Entry, last_ms: int | None, tz_name: str) -> ProgrammeError:
    """The refusal of an item none of whose occurrences can still start, naming the time that passed."""
    when = _local(last_ms, tz_name) if last_ms is not None else None
    if entry.mode == "once" or entry.date_to is None:
        return ProgrammeError("schedule.in_past", f"the start time has passed ({when})" if when else
                              "the start time has passed",
                              f"Thời gian phát đã qua ({when})." if when else "Thời gian phát đã qua.")
    return ProgrammeError("schedule.in_past",
                          f"the date range has ended (its last play could start at {when})" if when else
                          "the date range has ended",
                          f"Khoảng ngày phát đã qua (lần phát cuối có thể bắt đầu lúc {when})." if when else
                          "Khoảng ngày phát đã qua.")


def _what_vi(entry: Entry) -> str:
    return {"relay": "chương trình tiếp sóng", "separator": "khoảng lặng"}.get(entry.kind, "bản tin")


def place(db: Session, row: ProgrammeItem, since_ms: int, now: int, tz_name: str = TIMEZONE) -> Placement:
    """Where ``row`` plays if it is in the programme from ``since_ms`` on (its approval), as seen at ``now``.

    Raises ``ProgrammeError``: ``schedule.in_past`` when none of its occurrences can still start;
    ``schedule.session_full`` when its session is on air, the rest of it cannot hold the item and it
    has no later occurrence (a recurring item then starts with its next occurrence, and says so).
    """
    entry = replace(entry_from_row(row), since_ms=since_ms)
    programme, nodes = load_programme(db)
    programme.entries = [e for e in programme.entries if e.id != entry.id] + [entry]
    targets = [n for n in nodes if n.id in entry.areas]
    opening = next_opening(entry, targets, programme, now, tz_name=tz_name)
    if opening is None:
        raise in_past_error(entry, last_start(entry, targets, programme, now, tz_name=tz_name), tz_name)
    result = plan(programme, targets, opening.start_ms, tz_name=tz_name, window_ms=24 * 3600_000)
    mine = [i.start_ms for m in result.manifests.values() for i in m.items
            if entry_of(i.id) == entry.id and i.start_ms >= opening.start_ms]
    on_air = opening.slot if opening.slot is not None and opening.slot.start_ms < now else None
    if on_air is None:
        return Placement(min(mine) if mine else opening.start_ms)
    name = on_air.name or on_air.key
    # Entering now, the item follows what still plays in every session on air; one that cannot hold it
    # whole leaves it out and reports it cut (schedules.planner._pack).
    no_room = any(o.entry_id == entry.id and o.session_start_ms < since_ms for o in result.overruns)
    if not no_room:
        at = min(mine) if mine else opening.start_ms
        return Placement(at, f"the {on_air.key} session is on air: the item will play at {_clock(at, tz_name)}",
                         f"{name} đang phát: {_what_vi(entry)} sẽ phát lúc {_clock(at, tz_name)}.")
    later = next_opening(entry, targets, programme, on_air.end_ms, tz_name=tz_name)
    if later is None:
        end = _clock(on_air.end_ms, tz_name)
        raise ProgrammeError("schedule.session_full",
                             f"the {on_air.key} session is on air and what is left of it (until {end}) "
                             f"cannot hold the item; choose a later session",
                             f"{name} đang phát và không còn đủ chỗ cho {_what_vi(entry)} này trước khi kết thúc "
                             f"lúc {end}. Hãy chọn buổi phát sau.")
    nxt = plan(programme, targets, later.start_ms, tz_name=tz_name, window_ms=24 * 3600_000)
    starts = [i.start_ms for m in nxt.manifests.values() for i in m.items
              if entry_of(i.id) == entry.id and i.start_ms >= later.start_ms]
    at = min(starts) if starts else later.start_ms
    return Placement(at, f"the {on_air.key} session is on air with no room left: the item starts with its next "
                         f"occurrence, {_local(at, tz_name)}",
                     f"{name} đang phát và không còn đủ chỗ: {_what_vi(entry)} sẽ phát từ lần sau, "
                     f"lúc {_local(at, tz_name, '%H:%M ngày %d/%m/%Y')}.")
