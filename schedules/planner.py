"""The planner: programme + area tree + now -> one manifest per scope for now..now+48 h.

A pure function. Sessions are packed in order; what does not fit is cut at the
session end and reported (an over-run), never pushed into the next hour; free
time at a session's end is reported as an under-run. Overlaps, within a scope
or across the levels a receiver hears, are resolved by the same
:func:`schedules.manifest.merge` the receivers use (priority, then the wider
area), and every loser is reported as a conflict with its reason.

Nothing is placed before an item entered the programme (``Entry.since_ms``, its
approval): an occurrence that would have started earlier was never due. A
session item approved while its session runs goes after what was still to play
then, or ``LATE_LEAD_MS`` after its approval when the session is idle by then,
so that receivers can fetch the media; when the rest of the session cannot hold
all its repeats, that occurrence is not placed and is reported as cut whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from schedules import topics
from schedules.manifest import WINDOW_MS, Item, Manifest, merge
from schedules.programme import (
    MAX_AHEAD_DAYS,
    TIMEZONE,
    AreaNode,
    Entry,
    Programme,
    SessionTemplate,
    default_templates,
    plays_on,
)

LATE_LEAD_MS = 30_000
"""A session item approved while its session runs starts at least this long after its approval."""


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
                    if e.since_ms is None or start >= e.since_ms:  # earlier ones were never due
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
    """Play ``queue`` back to back from the session's start; cut at its end and report.

    Items approved while the session ran follow, in the order they were approved, each at the
    next free moment at least ``LATE_LEAD_MS`` after its approval, and only whole: one that does
    not fit with all its repeats is reported cut and not placed. Items approved after the
    session's end are not part of it.
    """
    on_time = [e for e in queue if e.since_ms is None or e.since_ms <= slot.start_ms]
    late = sorted((e for e in queue if e.since_ms is not None and slot.start_ms < e.since_ms < slot.end_ms),
                  key=lambda e: (e.since_ms, e.order, e.id))
    t = slot.start_ms
    for e in on_time:
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
    for e in late:
        assert e.since_ms is not None  # ``late`` holds only items that entered during the slot
        start = max(t, _ceil_second(e.since_ms + LATE_LEAD_MS))
        whole = e.repeat * e.duration_ms + (e.repeat - 1) * e.gap_ms
        occs = [occurrence_id(e.id, slot.area_id, day, r) for r in range(e.repeat)]
        if start + whole > slot.end_ms:
            result.overruns += [Overrun(e.id, occ, slot.area_id, slot.key, slot.start_ms, e.duration_ms, slot.name)
                                for occ in occs]
            continue
        for occ in occs:
            out.append(_item(e, occ, start, e.duration_ms))
            start += e.duration_ms + e.gap_ms
        t = start - e.gap_ms
    if (on_time or late) and t < slot.end_ms:
        result.underruns.append(Underrun(slot.area_id, slot.key, slot.start_ms, slot.end_ms - t, slot.name))


def _ceil_second(ms: int) -> int:
    return -(-ms // 1000) * 1000


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


# ---- when an item can still play ------------------------------------------------------------------


@dataclass(frozen=True)
class Opening:
    """The earliest moment an occurrence of an entry can start, and where.

    ``slot`` is the session it goes into (None at a time of day); when that session started
    before ``start_ms`` it is on air, and packing places the item after what still plays in it.
    """

    start_ms: int
    area_id: str
    day: date
    slot: SessionSlot | None = None


def _windows(e: Entry, area: AreaNode, programme: Programme, day: date,
             tz: ZoneInfo) -> list[tuple[int, int, SessionSlot | None]]:
    """``(from_ms, until_ms, slot)``: when each play of ``e`` in ``area`` on ``day`` may start.

    At a time of day a repeat starts at its second and at no other; in a session anywhere from the
    session's start to its end (packing decides the second).
    """
    if area.id not in e.areas or not plays_on(e, day):
        return []
    if e.at is None:
        return [(s.start_ms, s.end_ms, s) for s in session_slots(area, programme, day, tz) if s.key == e.session_key]
    out: list[tuple[int, int, SessionSlot | None]] = []
    start = _ms(day, e.at, tz)
    for _ in range(e.repeat):
        out.append((start, start + 1, None))
        start += e.duration_ms + e.gap_ms
    return out


def _days(e: Entry, first: date, last: date) -> list[date]:
    """The local days from ``first`` to ``last`` that lie inside the entry's own bounds, in order."""
    lows = [first, e.date_from, e.day if e.mode == "once" else None]
    highs = [last, e.date_to, e.day if e.mode == "once" else None]
    lo, hi = max(d for d in lows if d), min(d for d in highs if d)
    return [lo + timedelta(days=n) for n in range((hi - lo).days + 1)]


def next_opening(e: Entry, areas: list[AreaNode], programme: Programme, now_ms: int, *, tz_name: str = TIMEZONE,
                 horizon_days: int = MAX_AHEAD_DAYS) -> Opening | None:
    """When ``e`` can next start, at or after ``now_ms``, in any of its areas; None when none of its
    occurrences can still start (a play-once time that passed, a date range that ended, a session
    that is over). A later repeat of a play whose first repeat passed counts."""
    tz = ZoneInfo(tz_name)
    today = datetime.fromtimestamp(now_ms / 1000, tz).date()
    nodes = [a for a in areas if a.id in e.areas]
    for day in _days(e, today - timedelta(days=1), today + timedelta(days=horizon_days)):
        found = [Opening(max(lo, now_ms), node.id, day, slot) for node in nodes
                 for lo, until, slot in _windows(e, node, programme, day, tz) if until > now_ms]
        if found:
            return min(found, key=lambda o: (o.start_ms, o.area_id))
    return None


def last_start(e: Entry, areas: list[AreaNode], programme: Programme, now_ms: int, *, tz_name: str = TIMEZONE,
               horizon_days: int = MAX_AHEAD_DAYS) -> int | None:
    """The latest moment before ``now_ms`` at which an occurrence of ``e`` could have started (its
    session's start for a session item), to say which time has passed; None when it never had one."""
    tz = ZoneInfo(tz_name)
    today = datetime.fromtimestamp(now_ms / 1000, tz).date()
    nodes = [a for a in areas if a.id in e.areas]
    for day in reversed(_days(e, today - timedelta(days=horizon_days), today)):
        found = [lo for node in nodes for lo, _, _ in _windows(e, node, programme, day, tz) if lo < now_ms]
        if found:
            return max(found)
    return None
