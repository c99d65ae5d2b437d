"""The controller's database schema (SQLAlchemy 2). Every change needs an Alembic revision."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
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
    area: Mapped[Area] = relationship()


class User(Base):
    """A person who uses the web UI or the API."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    area_id: Mapped[str | None] = mapped_column(ForeignKey("areas.id"))
    created_ms: Mapped[int] = mapped_column(BigInteger)


class Media(Base):
    """A distribution file, named by its sha256 and never changed."""

    __tablename__ = "media"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    format: Mapped[str] = mapped_column(String(10))
    bytes: Mapped[int] = mapped_column(BigInteger)
    duration_ms: Mapped[int] = mapped_column(Integer)
    created_ms: Mapped[int] = mapped_column(BigInteger)


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


class ProgrammeItem(Base):
    """A bulletin placed at a time for an area."""

    __tablename__ = "programme_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bulletin_id: Mapped[int] = mapped_column(ForeignKey("bulletins.id"), index=True)
    area_id: Mapped[str] = mapped_column(ForeignKey("areas.id"), index=True)
    start_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    duration_ms: Mapped[int] = mapped_column(Integer)
    priority: Mapped[str] = mapped_column(String(12), default="normal")
    status: Mapped[str] = mapped_column(String(12), default="approved")
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    bulletin: Mapped[Bulletin] = relationship()
    area: Mapped[Area] = relationship()


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
    item_id: Mapped[str | None] = mapped_column(String(80), index=True)
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
