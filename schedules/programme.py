"""The broadcast programme as data: session templates, extra sessions, items.

Everything here is plain values, shared by the controller (which stores it)
and the planner (which turns it into manifests). Times people type are local
(Asia/Ho_Chi_Minh); the planner converts them to UTC epoch milliseconds.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, time
from functools import lru_cache
from pathlib import Path

from schedules.manifest import PRIORITIES, MediaRef

TIMEZONE = "Asia/Ho_Chi_Minh"
KINDS = ("audio", "text", "relay", "separator")
MODES = ("once", "daily", "weekdays", "range")
RELAY_SCHEMES = ("http://", "https://", "icecast://", "rtsp://", "rtmp://")
MAX_REPEAT = 10
MAX_AHEAD_DAYS = 400
"""How far ahead an item may be placed, in days."""
DATA = Path(__file__).parent / "data"


class ProgrammeError(ValueError):
    """A programme value that cannot be accepted; ``code`` is stable, the message says why."""

    def __init__(self, code: str, message: str, message_vi: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.message_vi = message_vi


@dataclass(frozen=True)
class SessionTemplate:
    """A recurring session of an area: ``key`` is what items refer to."""

    key: str
    name: str
    start: time
    end: time
    weekdays: frozenset[int] = frozenset(range(6))


@dataclass(frozen=True)
class ExtraSession:
    """A session added for one day (storm season): same shape, one date."""

    area_id: str
    day: date
    key: str
    name: str
    start: time
    end: time


@dataclass(frozen=True)
class AreaNode:
    """One node of the area tree as the planner sees it."""

    id: str
    level: str
    parent_id: str | None = None


@dataclass(frozen=True)
class Entry:
    """A programme item: what plays, where, when and how often."""

    id: int
    kind: str
    title: str
    priority: str
    duration_ms: int
    areas: tuple[str, ...]
    media: MediaRef | None = None
    relay_url: str | None = None
    exclude: tuple[str, ...] = ()
    session_key: str | None = None
    at: time | None = None
    order: int = 0
    mode: str = "once"
    day: date | None = None
    weekdays: frozenset[int] = frozenset()
    date_from: date | None = None
    date_to: date | None = None
    repeat: int = 1
    gap_ms: int = 0
    since_ms: int | None = None
    """When the item entered the programme (its approval), UTC epoch ms; None: always was.

    An occurrence that would have started before it was never due: it is not planned, not sent and
    not counted as missed. A session item that entered while its session ran is placed after what
    was still to play then (see :func:`schedules.planner.plan`)."""


@dataclass
class Programme:
    """All approved entries plus the session templates that apply to each area."""

    entries: list[Entry] = field(default_factory=list)
    templates: dict[str, list[SessionTemplate]] = field(default_factory=dict)
    extras: list[ExtraSession] = field(default_factory=list)


def parse_hhmm(text: str) -> time:
    """``"05:30"`` or ``"17:30:15"`` -> time; ``"24:00"`` is refused (sessions stay inside the day)."""
    try:
        parts = [int(p) for p in str(text).strip().split(":")]
        if len(parts) not in (2, 3):
            raise ValueError
        return time(parts[0], parts[1], parts[2] if len(parts) == 3 else 0)
    except (ValueError, TypeError) as exc:
        raise ProgrammeError("session.bad_time", f"{text!r} is not a time of day HH:MM",
                             f"Giờ {text!r} không hợp lệ (dạng GG:PP, trong ngày).") from exc


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def validate_sessions(sessions: Sequence[SessionTemplate | ExtraSession]) -> None:
    """Refuse a session that ends before it starts or overlaps another of the same list."""
    keys = set()
    for s in sessions:
        if _seconds(s.end) <= _seconds(s.start):
            raise ProgrammeError("session.ends_before_start",
                                 f"session {s.key!r} ends ({s.end:%H:%M}) before it starts ({s.start:%H:%M})",
                                 f"Buổi phát {s.name} kết thúc trước khi bắt đầu.")
        if s.key in keys:
            raise ProgrammeError("session.duplicate_key", f"two sessions are named {s.key!r}",
                                 f"Hai buổi phát trùng mã {s.key}.")
        keys.add(s.key)
    ordered = sorted(sessions, key=lambda s: _seconds(s.start))
    for a, b in zip(ordered, ordered[1:], strict=False):
        days_a = getattr(a, "weekdays", None)
        days_b = getattr(b, "weekdays", None)
        if days_a is not None and days_b is not None and not (days_a & days_b):
            continue
        if _seconds(b.start) < _seconds(a.end):
            raise ProgrammeError("session.overlap", f"session {b.key!r} starts before {a.key!r} ends",
                                 f"Buổi phát {b.name} chồng lên buổi {a.name}.")


def validate_entry(e: Entry) -> None:
    """Refuse an item whose values cannot be planned; the code names the field."""
    if e.kind not in KINDS:
        raise ProgrammeError("item.bad_kind", f"kind must be one of {', '.join(KINDS)}", "Loại mục không hợp lệ.")
    if e.priority not in PRIORITIES:
        raise ProgrammeError("item.bad_priority", f"priority must be one of {', '.join(PRIORITIES)}",
                             "Mức ưu tiên không hợp lệ.")
    if not 1 <= e.repeat <= MAX_REPEAT:
        raise ProgrammeError("item.bad_repeat", f"repeat count must be 1-{MAX_REPEAT}, not {e.repeat}",
                             f"Số lần phát lặp phải từ 1 đến {MAX_REPEAT}.")
    if not 0 <= e.gap_ms <= 3600_000:
        raise ProgrammeError("item.bad_gap", "the gap between repeats must be 0-3600 s",
                             "Khoảng nghỉ giữa các lần lặp phải từ 0 đến 3600 giây.")
    if e.duration_ms <= 0 or e.duration_ms > 6 * 3600_000:
        raise ProgrammeError("item.bad_duration", "duration must be between 1 ms and 6 hours",
                             "Thời lượng không hợp lệ.")
    if e.kind == "relay":
        url = (e.relay_url or "").strip().lower()
        if not url.startswith(RELAY_SCHEMES):
            raise ProgrammeError("item.bad_relay_url",
                                 f"relay URL must start with {', '.join(RELAY_SCHEMES)}",
                                 "Địa chỉ tiếp sóng phải bắt đầu bằng http://, https://, rtsp:// hoặc rtmp://.")
    elif e.media is None and e.kind != "separator":  # a separator without media is silence
        raise ProgrammeError("item.no_media", "the item has no ready audio", "Mục này chưa có âm thanh sẵn sàng.")
    if not e.areas:
        raise ProgrammeError("item.no_area", "the item targets no area", "Cần chọn ít nhất một địa bàn.")
    if (e.session_key is None) == (e.at is None):
        raise ProgrammeError("item.bad_placement", "place the item either in a session or at a time, not both",
                             "Chọn buổi phát hoặc giờ phát cụ thể (một trong hai).")
    if e.mode not in MODES:
        raise ProgrammeError("item.bad_mode", f"play mode must be one of {', '.join(MODES)}",
                             "Chế độ phát không hợp lệ.")
    if e.mode == "once" and e.day is None:
        raise ProgrammeError("item.no_date", "a play-once item needs its date", "Cần chọn ngày phát.")
    if e.mode == "weekdays" and not e.weekdays:
        raise ProgrammeError("item.no_weekdays", "choose at least one weekday", "Cần chọn ít nhất một thứ trong tuần.")
    if e.mode == "range" and (e.date_from is None or e.date_to is None):
        raise ProgrammeError("item.no_range", "a date range needs its first and last day",
                             "Cần chọn ngày bắt đầu và ngày kết thúc.")
    if e.date_from and e.date_to and e.date_to < e.date_from:
        raise ProgrammeError("item.range_reversed", "the date range ends before it starts",
                             "Khoảng ngày kết thúc trước khi bắt đầu.")
    if any(not 0 <= d <= 6 for d in e.weekdays):
        raise ProgrammeError("item.bad_weekday", "weekdays are 0 (Monday) to 6 (Sunday)", "Thứ không hợp lệ.")


def plays_on(e: Entry, day: date) -> bool:
    """True when the entry's play mode includes ``day`` (local date)."""
    if e.date_from and day < e.date_from:
        return False
    if e.date_to and day > e.date_to:
        return False
    if e.mode == "once":
        return day == e.day
    if e.mode == "daily":
        return True
    if e.mode == "weekdays":
        return day.weekday() in e.weekdays
    # range: every day inside it, or only the chosen weekdays when some are chosen
    return not e.weekdays or day.weekday() in e.weekdays


@lru_cache(maxsize=1)
def default_templates() -> dict[str, list[SessionTemplate]]:
    """The level defaults from ``schedules/data/levels.toml``."""
    with open(DATA / "levels.toml", "rb") as fh:
        data = tomllib.load(fh)
    out: dict[str, list[SessionTemplate]] = {}
    for level, spec in data.items():
        days = frozenset(spec.get("weekdays", range(6)))
        sessions = [
            SessionTemplate(s["key"], s["name"], parse_hhmm(s["start"]), parse_hhmm(s["end"]), days)
            for s in spec.get("sessions", [])
        ]
        validate_sessions(sessions)
        out[level] = sessions
    return out
