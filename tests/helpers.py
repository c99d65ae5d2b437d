"""Plain helpers for tests (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import os
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest


def make_config(tmp_path: Path, **extra) -> dict:
    """Controller test config rooted in ``tmp_path``."""
    return {
        "TESTING": True,
        "VAR_DIR": str(tmp_path / "var"),
        "SECRET_KEY": "test-secret",
        "HTTP_PORT": 8080,
        "LIVE_ICECAST": "off",  # the live-voice tests start their own Icecast
        **extra,
    }


PG_ADMIN_URL = os.environ.get("LOAXA_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def pg_database():
    """A fresh PostgreSQL database (its URL) for one test, dropped after; a skip that says why there is none."""
    from sqlalchemy import create_engine, text

    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as conn:
            name = f"loaxa_{uuid.uuid4().hex[:10]}"
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means no usable server
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL} (set LOAXA_TEST_PG_URL): {exc.__class__.__name__}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def count_rows(app, model) -> int:
    """How many rows ``model``'s table holds (to show a refused request stored nothing)."""
    from sqlalchemy import func, select

    from controller.db import session_scope

    with session_scope(app) as db:
        return db.scalar(select(func.count()).select_from(model))


def basic(username: str, password: str) -> dict[str, str]:
    """An Authorization header for HTTP Basic."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def seed_district(app) -> None:
    """A province, a district, two communes and users of every kind used by the tests."""
    from controller import auth
    from controller.db import session_scope
    from controller.models import Area, User

    with session_scope(app) as db:
        db.add_all([
            Area(id="hue", name="Huế", level="province", parent_id=None),
            Area(id="qd", name="Quảng Điền", level="district", parent_id="hue"),
            Area(id="qd/phu", name="Quảng Phú", level="commune", parent_id="qd"),
            Area(id="qd/an", name="Quảng An", level="commune", parent_id="qd"),
        ])
        db.flush()
        for name, role, area in (("admin", "admin", None), ("op-phu", "operator", "qd/phu"),
                                 ("op-an", "operator", "qd/an"), ("viewer", "viewer", None)):
            db.add(User(username=name, password_hash=auth.hash_password("pw-" + name), role=role, area_id=area,
                        created_ms=0))


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def tone(path: Path, seconds: float, frequency: int = 440, codec: list[str] | None = None) -> Path:
    """Generate a test tone with ffmpeg (fixtures are made at test time, never committed)."""
    from audio.ffmpeg import ffmpeg_exe

    args = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
            "-i", f"sine=frequency={frequency}:sample_rate=44100:duration={seconds}"]
    args += codec or ["-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k"]
    subprocess.run(args + [str(path)], check=True, capture_output=True)
    return path



def clear_retained(url: str, prefix: str = "loaxa/v1/#") -> int:
    """Delete every retained message under ``prefix`` so tests sharing a broker do not see each other's."""
    import threading

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from controller.mqtt import parse_url

    host, port, *_ = parse_url(url)
    found: set[str] = set()
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *_: c.subscribe(prefix, 1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_message = lambda _c, _u, m: found.add(m.topic) if m.retain and m.payload else None
    client.connect(host, port)
    client.loop_start()
    try:
        subscribed.wait(5)
        time.sleep(0.2)  # retained messages arrive right after the SUBACK
        for topic in sorted(found):
            client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()
    return len(found)


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path() -> str | None:
    """Debian's Chromium, or LOAXA_CHROMIUM (Playwright cannot download its own browser here)."""
    import os
    import shutil

    return os.environ.get("LOAXA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
