"""The controller's database schema (SQLAlchemy 2). Every change needs an Alembic revision."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

AREA_LEVELS = ("province", "district", "commune")
ROLES = ("viewer", "operator", "approver", "manager", "admin")
"""Roles from least to most powerful; each is scoped to an area subtree (or all when area is empty)."""


class Base(DeclarativeBase):
    """Declarative base of every model."""


class Area(Base):
    """A node of the area tree: province, district or commune (the depth is data)."""

    __tablename__ = "areas"
    id: Mapped[str] = mapped_column(String(120), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    level: Mapped[str] = mapped_column(String(20))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    require_distinct_approver: Mapped[bool] = mapped_column(Boolean, default=False)
    # A live emergency for this area (or below it) waits until a second person confirms it.
    alert_needs_confirm: Mapped[bool] = mapped_column(Boolean, default=False)
    parent: Mapped[Area | None] = relationship(remote_side=[id])


class Receiver(Base):
    """A loudspeaker cluster's receiver box."""

    __tablename__ = "receivers"
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    area_id: Mapped[str] = mapped_column(ForeignKey("areas.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    lat: Mapped[float | None] = mapped_column(Float)
    lon: Mapped[float | None] = mapped_column(Float)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_hb: Mapped[str | None] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    # Set when the box is taken out of service: its token and broker login stop working, it leaves
    # the dashboards and the missed-play check, and its history stays for the as-run reports.
    retired_ms: Mapped[int | None] = mapped_column(BigInteger)
    area: Mapped[Area] = relationship()


class Presence(Base):
    """One change of a receiver's broker presence (its retained status and last will): online from ``since_ms``."""

    __tablename__ = "presence"
    __table_args__ = (Index("ix_presence_rx_since", "rx_id", "since_ms"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rx_id: Mapped[str] = mapped_column(ForeignKey("receivers.id"))
    online: Mapped[bool] = mapped_column(Boolean)
    since_ms: Mapped[int] = mapped_column(BigInteger)


class User(Base):
    """A person who uses the web UI or the API."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until_ms: Mapped[int | None] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # May send emergency broadcasts and drills in their areas: managers and admins always, an operator or
    # approver when a manager granted it.
    may_alert: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    """A bearer token for automation, with the scopes of the user who owns it."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    last_used_ms: Mapped[int | None] = mapped_column(BigInteger)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Media(Base):
    """A distribution file, named by its sha256 and never changed."""

    __tablename__ = "media"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    format: Mapped[str] = mapped_column(String(10))
    bytes: Mapped[int] = mapped_column(BigInteger)
    duration_ms: Mapped[int] = mapped_column(Integer)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    loudness_lufs: Mapped[float | None] = mapped_column(Float)  # measured after normalisation
    true_peak_db: Mapped[float | None] = mapped_column(Float)  # after normalisation (dBTP)
    peaks: Mapped[str | None] = mapped_column(Text)  # JSON list of 0..1 peaks for a waveform


class Bulletin(Base):
    """Something to broadcast: an upload or a text, with its processing state."""

    __tablename__ = "bulletins"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(10), default="audio")
    area_id: Mapped[str] = mapped_column(ForeignKey("areas.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(Text)
    source_name: Mapped[str | None] = mapped_column(String(300))
    media_sha256: Mapped[str | None] = mapped_column(ForeignKey("media.sha256"))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    media: Mapped[Media | None] = relationship()
    progress: Mapped[int | None] = mapped_column(Integer)  # percent while processing
    error_message_vi: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)  # the text of a text-to-speech bulletin
    tts_engine: Mapped[str | None] = mapped_column(String(20))  # engine that spoke it: gtts, espeak, piper
    tts_voice: Mapped[str | None] = mapped_column(String(200))
    loudness_in_lufs: Mapped[float | None] = mapped_column(Float)  # measured on the source
    peak_in_db: Mapped[float | None] = mapped_column(Float)  # sample peak of the source
    updated_ms: Mapped[int | None] = mapped_column(BigInteger)
    # Kept but worth a look (e.g. a truncated file decoded only in part); the UI shows it.
    warning_code: Mapped[str | None] = mapped_column(String(60))
    warning_message: Mapped[str | None] = mapped_column(Text)
    warning_message_vi: Mapped[str | None] = mapped_column(Text)


class ProgrammeItem(Base):
    """A programme item: what plays (bulletin, relay, separator), where, when, how often.

    ``area_id`` is the owning area (for permissions); ``targets`` (JSON list)
    the areas it plays in. Placement is a session (``session_key``) or a local
    time of day (``at_s``). ``start_ms`` is the first play of a play-once item.
    """

    __tablename__ = "programme_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(12), default="audio")
    title: Mapped[str | None] = mapped_column(String(300))
    bulletin_id: Mapped[int | None] = mapped_column(ForeignKey("bulletins.id"), index=True)
    fallback_bulletin_id: Mapped[int | None] = mapped_column(ForeignKey("bulletins.id"))
    relay_url: Mapped[str | None] = mapped_column(String(1000))
    area_id: Mapped[str] = mapped_column(ForeignKey("areas.id"), index=True)
    targets: Mapped[str | None] = mapped_column(Text)
    exclude: Mapped[str | None] = mapped_column(Text)
    start_ms: Mapped[int | None] = mapped_column(BigInteger, index=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
    priority: Mapped[str] = mapped_column(String(12), default="normal")
    session_key: Mapped[str | None] = mapped_column(String(40))
    at_s: Mapped[int | None] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(10), default="once")
    day: Mapped[str | None] = mapped_column(String(10))
    weekdays: Mapped[int] = mapped_column(Integer, default=0)
    date_from: Mapped[str | None] = mapped_column(String(10))
    date_to: Mapped[str | None] = mapped_column(String(10))
    repeat_count: Mapped[int] = mapped_column(Integer, default=1)
    repeat_gap_s: Mapped[int] = mapped_column(Integer, default=0)
    sort_order: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(12), default="draft")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    approved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    approved_ms: Mapped[int | None] = mapped_column(BigInteger)
    bulletin: Mapped[Bulletin | None] = relationship(foreign_keys=[bulletin_id])
    fallback: Mapped[Bulletin | None] = relationship(foreign_keys=[fallback_bulletin_id])
    area: Mapped[Area] = relationship()


class SessionTemplateRow(Base):
    """An area's own recurring session (when absent, the level defaults apply)."""

    __tablename__ = "session_templates"
    __table_args__ = (UniqueConstraint("area_id", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    area_id: Mapped[str] = mapped_column(ForeignKey("areas.id"), index=True)
    key: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(100))
    start_s: Mapped[int] = mapped_column(Integer)
    end_s: Mapped[int] = mapped_column(Integer)
    weekdays: Mapped[int] = mapped_column(Integer, default=0b0111111)


class ExtraSessionRow(Base):
    """A session added to one day of one area (storm season)."""

    __tablename__ = "extra_sessions"
    __table_args__ = (UniqueConstraint("area_id", "day", "key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    area_id: Mapped[str] = mapped_column(ForeignKey("areas.id"), index=True)
    day: Mapped[str] = mapped_column(String(10))
    key: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(100))
    start_s: Mapped[int] = mapped_column(Integer)
    end_s: Mapped[int] = mapped_column(Integer)


class MissedPlay(Base):
    """A play that was due on a receiver and never started (found by the scheduler)."""

    __tablename__ = "missed_plays"
    __table_args__ = (UniqueConstraint("occurrence_id", "rx_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    occurrence_id: Mapped[str] = mapped_column(String(200), index=True)
    programme_item_id: Mapped[int] = mapped_column(Integer, index=True)
    rx_id: Mapped[str] = mapped_column(String(80), index=True)
    planned_start_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    detected_ms: Mapped[int] = mapped_column(BigInteger)


class AuditEntry(Base):
    """Who changed what, when: every programme change is written here."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(40))
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(120), index=True)
    detail: Mapped[str | None] = mapped_column(Text)


class Publication(Base):
    """A signed message the controller published retained (manifest or conf), by version."""

    __tablename__ = "publications"
    __table_args__ = (UniqueConstraint("kind", "scope", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(12))
    scope: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class Event(Base):
    """An event reported by a receiver; the uuid makes ingestion idempotent."""

    __tablename__ = "events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    rx_id: Mapped[str] = mapped_column(String(80), index=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(40), index=True)
    item_id: Mapped[str | None] = mapped_column(String(200), index=True)
    programme_item_id: Mapped[int | None] = mapped_column(Integer, index=True)
    body: Mapped[str] = mapped_column(Text)
    received_ms: Mapped[int] = mapped_column(BigInteger)


class Fault(Base):
    """A fault raised by a receiver, open until cleared."""

    __tablename__ = "faults"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rx_id: Mapped[str] = mapped_column(String(80), index=True)
    code: Mapped[str] = mapped_column(String(60))
    detail: Mapped[str | None] = mapped_column(Text)
    raised_ms: Mapped[int] = mapped_column(BigInteger)
    cleared_ms: Mapped[int | None] = mapped_column(BigInteger)


class HeartbeatBucket(Base):
    """Heartbeats of one receiver in one time bucket (15 min), downsampled to count, min, max and sum.

    A receiver beats every 30 s; keeping every beat of 10,000 receivers makes 200 million rows a
    week, so only these buckets are kept (about 670 rows per receiver per week).
    """

    __tablename__ = "heartbeat_history"
    __table_args__ = (UniqueConstraint("rx_id", "bucket_ms"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rx_id: Mapped[str] = mapped_column(String(80))
    bucket_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    beats: Mapped[int] = mapped_column(Integer, default=0)
    offset_n: Mapped[int] = mapped_column(Integer, default=0)  # clock offset, ms
    offset_sum: Mapped[float] = mapped_column(Float, default=0.0)
    offset_min: Mapped[float | None] = mapped_column(Float)
    offset_max: Mapped[float | None] = mapped_column(Float)
    temp_n: Mapped[int] = mapped_column(Integer, default=0)  # temperature, °C
    temp_sum: Mapped[float] = mapped_column(Float, default=0.0)
    temp_min: Mapped[float | None] = mapped_column(Float)
    temp_max: Mapped[float | None] = mapped_column(Float)
    signal_n: Mapped[int] = mapped_column(Integer, default=0)  # 4G signal, dBm
    signal_sum: Mapped[float] = mapped_column(Float, default=0.0)
    signal_min: Mapped[float | None] = mapped_column(Float)
    signal_max: Mapped[float | None] = mapped_column(Float)
    disk_free_min: Mapped[int | None] = mapped_column(BigInteger)
    playing_beats: Mapped[int] = mapped_column(Integer, default=0)


class AreaActivity(Base):
    """How many of an area's receivers beat in each 15-minute bucket (for the working share over time)."""

    __tablename__ = "area_activity"
    area_id: Mapped[str] = mapped_column(String(120), primary_key=True)
    bucket_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    working: Mapped[int] = mapped_column(Integer, default=0)


class AsRunRecord(Base):
    """What one receiver reported of one occurrence, folded from its playback events.

    ``rank``: 1 started, 2 failed, 3 finished; a later, higher-ranked event replaces the row.
    Built by ``controller.services.reports.refresh`` from the events, so reports never parse
    event bodies; missed plays stay in :class:`MissedPlay`.
    """

    __tablename__ = "as_run"
    __table_args__ = (UniqueConstraint("occurrence_id", "rx_id"),
                      Index("ix_as_run_area_start", "area_id", "planned_start_ms"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    occurrence_id: Mapped[str] = mapped_column(String(200))
    rx_id: Mapped[str] = mapped_column(String(80))
    area_id: Mapped[str] = mapped_column(String(120))
    programme_item_id: Mapped[int | None] = mapped_column(Integer)
    planned_start_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    reported_ms: Mapped[int] = mapped_column(BigInteger)
    received_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    rank: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(12))
    played_ms: Mapped[int | None] = mapped_column(BigInteger)
    planned_ms: Mapped[int | None] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(200))


Index("ix_events_type_ts", Event.type, Event.ts_ms)
Index("ix_events_received", Event.received_ms)
Index("ix_faults_raised", Fault.raised_ms)


class FaultAck(Base):
    """Who acknowledged a fault, and when (a fault is open, acknowledged, then resolved when cleared)."""

    __tablename__ = "fault_acks"
    fault_id: Mapped[int] = mapped_column(ForeignKey("faults.id"), primary_key=True)
    acked_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acked_ms: Mapped[int] = mapped_column(BigInteger)
    note: Mapped[str | None] = mapped_column(Text)


class LoginThrottle(Base):
    """Failed logins from one client address: for one account (``kind`` "account") or for all (``kind``
    "address", ``username`` empty). Kept in the database so every web worker and the CLI see the same."""

    __tablename__ = "login_throttle"
    __table_args__ = (UniqueConstraint("kind", "address", "username", name="uq_login_throttle"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))
    address: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(80), index=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    blocked_until_ms: Mapped[int | None] = mapped_column(BigInteger)


ALERT_STATES = ("awaiting_confirm", "queued", "preparing", "running", "ended", "stopped", "failed", "cancelled")
"""An alert's life: waits for a second person or its turn, its sound is made, it runs, it ends (or is stopped)."""
ALERT_OPEN = ("awaiting_confirm", "queued", "preparing", "running")


class Alert(Base):
    """An emergency broadcast (``mode`` live) or a drill (``mode`` drill): what, where, who, and how it went.

    ``id`` is the alert id on the wire (the item id receivers report). ``scopes`` (JSON list) are the
    scopes its commands went to; ``targets`` (JSON ``{"areas": [...], "receivers": [...]}``) what the
    sender picked; ``target_rx`` (JSON list) the receivers it was meant to reach when it started;
    ``nonces`` (JSON list) its commands' nonces, to match refusals.
    """

    __tablename__ = "alerts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    mode: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(20), index=True)
    title: Mapped[str] = mapped_column(String(300))
    area_id: Mapped[str] = mapped_column(ForeignKey("areas.id"), index=True)
    targets: Mapped[str] = mapped_column(Text)
    scopes: Mapped[str] = mapped_column(Text)
    target_rx: Mapped[str | None] = mapped_column(Text)
    content_kind: Mapped[str] = mapped_column(String(12))
    bulletin_id: Mapped[int | None] = mapped_column(ForeignKey("bulletins.id"))
    template_id: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str | None] = mapped_column(Text)
    stream_url: Mapped[str | None] = mapped_column(String(1000))
    volume: Mapped[int] = mapped_column(Integer, default=100)
    chime: Mapped[bool] = mapped_column(Boolean, default=True)
    repeat: Mapped[int] = mapped_column(Integer, default=3)
    gap_s: Mapped[float] = mapped_column(Float, default=4.0)
    until_ms: Mapped[int | None] = mapped_column(BigInteger)
    media_sha256: Mapped[str | None] = mapped_column(ForeignKey("media.sha256"))
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    tts_engine: Mapped[str | None] = mapped_column(String(20))
    corrects_id: Mapped[str | None] = mapped_column(String(40), index=True)
    replaces_id: Mapped[str | None] = mapped_column(String(40))
    nonces: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    confirmed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    confirmed_ms: Mapped[int | None] = mapped_column(BigInteger)
    started_ms: Mapped[int | None] = mapped_column(BigInteger)
    ends_ms: Mapped[int | None] = mapped_column(BigInteger)
    ended_ms: Mapped[int | None] = mapped_column(BigInteger)
    ended_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    end_reason: Mapped[str | None] = mapped_column(String(40))
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_message_vi: Mapped[str | None] = mapped_column(Text)


class AlertTemplate(Base):
    """A prepared emergency text (storm levels, flood, fire, epidemic, correction); ``area_id`` None: for all."""

    __tablename__ = "alert_templates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    topic: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class AlertSound(Base):
    """A rendered alert sound, by what it was made of (``key``: sha256 of the inputs), so repeats are instant."""

    __tablename__ = "alert_sounds"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_sha256: Mapped[str] = mapped_column(ForeignKey("media.sha256"))
    tts_engine: Mapped[str | None] = mapped_column(String(20))
    created_ms: Mapped[int] = mapped_column(BigInteger)


class StreamSource(Base):
    """A saved live stream to relay (VOV, the province, the district studio), kept per area."""

    __tablename__ = "stream_sources"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(1000))
    created_ms: Mapped[int] = mapped_column(BigInteger)
