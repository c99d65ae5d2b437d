"""The programme in the database: rows <-> planner values, validation, approval, audit."""

from __future__ import annotations

import json
from datetime import date, time
from typing import Any

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
from schedules.programme import (
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


def audit(db: Session, user_id: int | None, action: str, object_type: str, object_id: Any,
          detail: dict | None = None) -> None:
    """Append one line to the audit log (same transaction as the change it records)."""
    db.add(AuditEntry(ts_ms=now_ms(), user_id=user_id, action=action, object_type=object_type,
                      object_id=str(object_id), detail=json.dumps(detail, ensure_ascii=False) if detail else None))


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


def decide(db: Session, principal, row: ProgrammeItem, approve: bool, reason: str = "") -> None:
    """Approve or reject ``row`` for ``principal``, with the area's distinct-approver rule and an audit line."""
    if not can_approve(principal, db, row):
        raise ApprovalRefused("auth.forbidden", "your role or area does not allow this",
                              "Bạn không có quyền duyệt mục này.")
    owner = db.get(Area, row.area_id)
    if approve and owner is not None and owner.require_distinct_approver and row.created_by == principal.id:
        raise ApprovalRefused("approval.same_person", "this area requires another person to approve",
                              "Địa bàn này yêu cầu người duyệt khác người tạo.")
    if approve:
        row.status, row.approved_by, row.approved_ms = "approved", principal.id, now_ms()
        audit(db, principal.id, "approve", "programme_item", row.id)
    else:
        row.status, row.approved_by, row.approved_ms = "rejected", None, None
        audit(db, principal.id, "reject", "programme_item", row.id, {"reason": reason[:500]})
