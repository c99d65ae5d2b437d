"""The only module that talks to SQLAlchemy's engine: connections, sessions, migrations."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config as AlembicConfig
from flask import Flask, current_app, g
from sqlalchemy import CursorResult, create_engine, event
from sqlalchemy.engine import Engine, Result
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///...`` URL, or None (another database, or one in memory)."""
    if not url.startswith("sqlite:///"):
        return None
    name = url[len("sqlite:///"):].split("?", 1)[0]
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def _private_sqlite_file(url: str) -> None:
    """Create the SQLite file 0600 before SQLite does (its -wal and -shm files copy that mode).

    The database holds password hashes, receiver token hashes and the audit log: no other user
    of the machine reads it. An existing file loses its group and other bits.
    """
    path = sqlite_path(url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.close(fd)
    try:
        for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if candidate.exists() and candidate.stat().st_mode & 0o077:
                os.chmod(candidate, 0o600)
    except OSError as exc:
        logger.warning("cannot make the database %s private: %s", path, exc)


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, foreign keys, a busy timeout and a file only its owner reads."""
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade(url: str) -> None:
    """Bring the schema at ``url`` to the newest Alembic revision."""
    _private_sqlite_file(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def init_app(app: Flask) -> None:
    """Create the engine and session factory, and close the request session on teardown."""
    engine = make_engine(app.config["DATABASE_URL"])
    app.extensions["loaxa.engine"] = engine
    app.extensions["loaxa.sessionmaker"] = sessionmaker(engine, expire_on_commit=False)
    app.teardown_appcontext(_close_session)


def get_db() -> Session:
    """The session of the current request or app context."""
    if "db" not in g:
        g.db = current_app.extensions["loaxa.sessionmaker"]()
    return g.db


@contextlib.contextmanager
def session_scope(app: Flask) -> Iterator[Session]:
    """A session for background work: committed on success, rolled back on error."""
    session = app.extensions["loaxa.sessionmaker"]()
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


def _close_session(_exc: BaseException | None) -> None:
    session = g.pop("db", None)
    if session is not None:
        session.close()


def rowcount(result: Result[Any]) -> int:
    """How many rows a DELETE or UPDATE matched (``Session.execute`` is typed as returning a ``Result``;
    for DML it is a ``CursorResult``, which has the count)."""
    return cast(CursorResult, result).rowcount or 0
