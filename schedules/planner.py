"""The planner: programme + area tree + now -> one manifest per scope for now..now+48 h.

A pure function. Sessions are packed in order; what does not fit is cut at the
session end and reported (an over-run), never pushed into the next hour; free
time at a session's end is reported as an under-run. Overlaps, within a scope
or across the levels a receiver hears, are resolved by the same
:func:`schedules.manifest.merge` the receivers use (priority, then the wider
area), and every loser is reported as a conflict with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from schedules import topics
from schedules.manifest import WINDOW_MS, Item, Manifest, merge
from schedules.programme import (
    TIMEZONE,
    AreaNode,
    Entry,
    Programme,
    SessionTemplate,
    default_templates,
    plays_on,
)


@dataclass(frozen=True)
class SessionSlot:
    """One session on one day for one area."""

    area_id: str
    key: str
    name: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class Overrun:
    """An item (or repeat) cut at its session's end: ``cut_ms`` of it will not play."""

    entry_id: int
    occurrence_id: str
    area_id: str
    session_key: str
    session_start_ms: int
    cut_ms: int
    session_name: str = ""


@dataclass(frozen=True)
class Underrun:
    """Free time left at the end of a session."""

    area_id: str
    session_key: str
    session_start_ms: int
    free_ms: int
    session_name: str = ""


@dataclass(frozen=True)
class PlanConflict:
    """An occurrence that lost its slot, where a receiver would hear the clash, and why."""

    loser: str
    loser_scope: str
    winner: str
    winner_scope: str
    area_id: str
    reason: str


@dataclass
class Plan:
    """Everything the planner decided for the window."""

    now_ms: int
    window_end_ms: int
    manifests: dict[str, Manifest] = field(default_factory=dict)
    sessions: list[SessionSlot] = field(default_factory=list)
    overruns: list[Overrun] = field(default_factory=list)
    underruns: list[Underrun] = field(default_factory=list)
    conflicts: list[PlanConflict] = field(default_factory=list)


def occurrence_id(entry_id: int, area_id: str, day: date, repeat: int) -> str:
    """Stable id of one play: ``pi-<item>.<yyyymmdd>.<repeat>.<area>``."""
    return f"pi-{entry_id}.{day:%Y%m%d}.{repeat}.{area_id}"


def entry_of(occurrence: str) -> int | None:
    """The programme item id inside an occurrence id (or a bare ``pi-<id>``)."""
    if not occurrence.startswith("pi-"):
        return None
    head = occurrence[3:].split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _ms(day: date, t: time, tz: ZoneInfo) -> int:
    return int(datetime.combine(day, t, tz).timestamp() * 1000)


def templates_for(area: AreaNode, programme: Programme) -> list[SessionTemplate]:
    """The area's own templates when it has some, else its level's defaults."""
    if area.id in programme.templates:
        return programme.templates[area.id]
    return default_templates().get(area.level, [])


def session_slots(area: AreaNode, programme: Programme, day: date, tz: ZoneInfo) -> list[SessionSlot]:
    """The sessions of ``area`` on ``day``: templates for that weekday plus the day's extras."""
    slots = [
        SessionSlot(area.id, t.key, t.name, _ms(day, t.start, tz), _ms(day, t.end, tz))
        for t in templates_for(area, programme)
        if day.weekday() in t.weekdays
    ]
    slots += [
        SessionSlot(area.id, x.key, x.name, _ms(day, x.start, tz), _ms(day, x.end, tz))
        for x in programme.extras
        if x.area_id == area.id and x.day == day
    ]
    return sorted(slots, key=lambda s: s.start_ms)


def _item(e: Entry, occ: str, start: int, duration: int) -> Item:
    return Item(id=occ, title=e.title, start_ms=start, duration_ms=duration, priority=e.priority,
                media=e.media, kind=e.kind, url=e.relay_url, exclude=tuple(sorted(e.exclude)))


def plan(programme: Programme, areas: list[AreaNode], now_ms: int, *, tz_name: str = TIMEZONE,
         window_ms: int = WINDOW_MS) -> Plan:
    """Plan every area's manifest for ``[now_ms, now_ms + window_ms)``; deterministic."""
    tz = ZoneInfo(tz_name)
    end_ms = now_ms + window_ms
    result = Plan(now_ms=now_ms, window_end_ms=end_ms)
    by_id = {a.id: a for a in areas}
    first = datetime.fromtimestamp(now_ms / 1000, tz).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end_ms / 1000, tz).date()
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    placed: dict[str, list[Item]] = {a.id: [] for a in areas}
    entries = sorted(programme.entries, key=lambda e: (e.order, e.id))

    for area in sorted(areas, key=lambda a: a.id):
        for day in days:
            todays = [e for e in entries if area.id in e.areas and plays_on(e, day)]
            for slot in session_slots(area, programme, day, tz):
                if slot.end_ms <= now_ms or slot.start_ms >= end_ms:
                    continue  # outside the window: neither planned nor reported
                result.sessions.append(slot)
                _pack(slot, [e for e in todays if e.session_key == slot.key], day, placed[area.id], result)
            for e in todays:
                if e.at is None:
                    continue
                start = _ms(day, e.at, tz)
                for r in range(e.repeat):
                    placed[area.id].append(_item(e, occurrence_id(e.id, area.id, day, r), start, e.duration_ms))
                    start += e.duration_ms + e.gap_ms

    for area in sorted(areas, key=lambda a: a.id):
        scope = topics.area_scope(area.id)
        in_window = sorted((i for i in placed[area.id] if i.end_ms > now_ms and i.start_ms < end_ms),
                           key=lambda i: (i.start_ms, i.id))
        kept, lost = merge([(0, Manifest(scope, 1, now_ms, now_ms, end_ms, in_window))])
        for c in lost:
            result.conflicts.append(PlanConflict(c.loser.id, scope, c.winner.id, scope, area.id, c.reason))
        result.manifests[scope] = Manifest(scope, 1, now_ms, now_ms, end_ms, [i for _, i in kept])

    # What a receiver in each area hears: the manifests of the area and every area above it.
    seen = {(c.loser, c.winner) for c in result.conflicts}
    for area in sorted(areas, key=lambda a: a.id):
        chain = _chain(area, by_id)
        if len(chain) < 2:
            continue
        _, lost = merge([(w, result.manifests[topics.area_scope(a.id)]) for w, a in enumerate(chain)])
        for c in lost:
            if (c.loser.id, c.winner.id) not in seen:
                seen.add((c.loser.id, c.winner.id))
                result.conflicts.append(PlanConflict(c.loser.id, c.loser_scope, c.winner.id, c.winner_scope,
                                                     area.id, c.reason))
    return result


def _pack(slot: SessionSlot, queue: list[Entry], day: date, out: list[Item], result: Plan) -> None:
    """Play ``queue`` back to back from the session's start; cut at its end and report."""
    t = slot.start_ms
    for e in queue:
        for r in range(e.repeat):
            if r:
                t += e.gap_ms
            occ = occurrence_id(e.id, slot.area_id, day, r)
            room = slot.end_ms - t
            if room <= 0:
                result.overruns.append(Overrun(e.id, occ, slot.area_id, slot.key, slot.start_ms, e.duration_ms,
                                               slot.name))
            elif e.duration_ms > room:
                out.append(_item(e, occ, t, room))
                result.overruns.append(Overrun(e.id, occ, slot.area_id, slot.key, slot.start_ms,
                                               e.duration_ms - room, slot.name))
            else:
                out.append(_item(e, occ, t, e.duration_ms))
            t += e.duration_ms
    if queue and t < slot.end_ms:
        result.underruns.append(Underrun(slot.area_id, slot.key, slot.start_ms, slot.end_ms - t, slot.name))


def _chain(area: AreaNode, by_id: dict[str, AreaNode]) -> list[AreaNode]:
    chain, seen = [], set()
    node: AreaNode | None = area
    while node is not None and node.id not in seen:
        seen.add(node.id)
        chain.append(node)
        node = by_id.get(node.parent_id) if node.parent_id else None
    return list(reversed(chain))


def plan_scope(scope: str, items: list[Item], now_ms: int, version: int = 1) -> Manifest:
    """A manifest of already placed items: those still playing or starting before now+48 h."""
    window_end = now_ms + WINDOW_MS
    chosen = sorted(
        (i for i in items if i.end_ms > now_ms and i.start_ms < window_end),
        key=lambda i: (i.start_ms, i.id),
    )
    return Manifest(scope=scope, version=version, generated_ms=now_ms, window_start_ms=now_ms,
                    window_end_ms=window_end, items=chosen)
