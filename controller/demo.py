"""The demo district of ``make run``: areas, six receivers, an admin, a bulletin."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from flask import Flask
from sqlalchemy import select

from audio import ffmpeg
from controller import auth, keys
from controller.db import session_scope
from controller.models import Area, Bulletin, ProgrammeItem, Receiver, User
from controller.services.provisioning import write_receiver_config
from schedules.events import now_ms

logger = logging.getLogger(__name__)

AREAS = [
    ("thua-thien-hue", "Thành phố Huế", "province", None),
    ("quang-dien", "Huyện Quảng Điền", "district", "thua-thien-hue"),
    ("quang-dien/quang-phu", "Xã Quảng Phú", "commune", "quang-dien"),
    ("quang-dien/quang-an", "Xã Quảng An", "commune", "quang-dien"),
]
RECEIVERS = [
    ("quang-phu-01", "quang-dien/quang-phu", "Cụm thôn Phú Lương A", 16.5731, 107.5112),
    ("quang-phu-02", "quang-dien/quang-phu", "Cụm thôn Phú Lương B", 16.5752, 107.5164),
    ("quang-phu-03", "quang-dien/quang-phu", "Cụm chợ Quảng Phú", 16.5689, 107.5201),
    ("quang-an-01", "quang-dien/quang-an", "Cụm thôn Đông Xuyên", 16.5412, 107.5902),
    ("quang-an-02", "quang-dien/quang-an", "Cụm thôn Mỹ Xuyên", 16.5460, 107.5851),
    ("quang-an-03", "quang-dien/quang-an", "Cụm UBND xã Quảng An", 16.5388, 107.5810),
]
DEMO_TITLE = "Bản tin thử: thông báo lịch tiêm chủng"


def seed(app: Flask, admin_password: str | None = None) -> dict:
    """Create the demo district if absent; returns the admin login and receiver tokens.

    Receiver tokens are re-issued on every call (only their hashes are stored),
    so the in-process simulator always has valid ones.
    """
    tokens: dict[str, str] = {}
    admin = None
    with session_scope(app) as db:
        for area_id, name, level, parent in AREAS:
            if db.get(Area, area_id) is None:
                db.add(Area(id=area_id, name=name, level=level, parent_id=parent))
        db.flush()
        for rx_id, area_id, name, lat, lon in RECEIVERS:
            token = auth.new_token()
            tokens[rx_id] = token
            rx = db.get(Receiver, rx_id)
            if rx is None:
                db.add(Receiver(id=rx_id, area_id=area_id, name=name, lat=lat, lon=lon,
                                token_hash=auth.token_hash(token), created_ms=now_ms()))
            else:
                rx.token_hash = auth.token_hash(token)
        if db.scalars(select(User).where(User.username == "admin")).first() is None:
            admin = admin_password or secrets.token_urlsafe(9)
            db.add(User(username="admin", password_hash=auth.hash_password(admin), role="admin",
                        area_id=None, created_ms=now_ms()))
    _demo_bulletin(app)
    return {"admin_password": admin, "tokens": tokens}


def _demo_bulletin(app: Flask) -> None:
    """A short tone bulletin, scheduled two minutes from now and at the next evening session."""
    svc = app.extensions["loaxa.services"]
    with session_scope(app) as db:
        bulletin = db.scalars(select(Bulletin).where(Bulletin.title == DEMO_TITLE)).first()
        if bulletin is None:
            bulletin = Bulletin(title=DEMO_TITLE, kind="audio", area_id="quang-dien/quang-phu", status="processing",
                                source_name="demo-tone.mp3", created_ms=now_ms())
            db.add(bulletin)
            db.flush()
            with tempfile.TemporaryDirectory() as tmp:
                src = Path(tmp) / "demo-tone.mp3"
                ffmpeg.generate_tone(src, 20)
                svc.catalogue.process_now(db, bulletin, src)
        if bulletin.media is None:
            db.refresh(bulletin)
        if bulletin.status != "ready" or bulletin.media is None:
            logger.error("demo bulletin could not be prepared: %s", bulletin.error_message)
            return
        now = now_ms()
        tz = ZoneInfo(app.config["TIMEZONE"])
        communes = ["quang-dien/quang-an", "quang-dien/quang-phu"]
        common = dict(bulletin_id=bulletin.id, kind="audio", duration_ms=bulletin.media.duration_ms,
                      priority="normal", status="approved", created_ms=now, approved_ms=now)
        daily = db.scalars(select(ProgrammeItem).where(ProgrammeItem.bulletin_id == bulletin.id,
                                                       ProgrammeItem.mode == "daily")).first()
        if daily is None:
            # Every evening session of both communes opens with the bulletin.
            db.add(ProgrammeItem(area_id="quang-dien", targets=json.dumps(communes), session_key="evening",
                                 mode="daily", **common))
        upcoming = db.scalars(select(ProgrammeItem).where(ProgrammeItem.bulletin_id == bulletin.id,
                                                          ProgrammeItem.start_ms > now)).first()
        if upcoming is None:
            # And once, two minutes from now, so a visitor sees it play.
            soon = datetime.fromtimestamp(now // 1000 + 120, tz)
            for area_id in communes:
                db.add(ProgrammeItem(area_id=area_id, mode="once", day=soon.date().isoformat(),
                                     at_s=soon.hour * 3600 + soon.minute * 60 + soon.second,
                                     start_ms=int(soon.timestamp() * 1000), **common))


def receiver_configs(app: Flask, broker_url: str, tokens: dict[str, str], state_root: Path) -> list[Path]:
    """Write one receiver TOML per demo receiver (file sink under var/) and return their paths."""
    svc = app.extensions["loaxa.services"]
    public = keys.public_text(svc.key)
    state_root.mkdir(parents=True, exist_ok=True)
    paths = []
    for rx_id, token in tokens.items():
        paths.append(write_receiver_config(
            state_root / f"{rx_id}.toml", rx_id=rx_id, mqtt_url=broker_url, public_key=public,
            media_base_url=app.config["PUBLIC_URL"], token=token, state_dir=state_root / rx_id, sink="file"))
    return paths


def start_receivers(config_dir: Path, *, log_level: str = "info") -> subprocess.Popen[bytes]:
    """Run the demo's receivers as ``loaxa-receiver sim --config-dir DIR``, a process of its own.

    The controller imports nothing from ``receiver/`` (a server installs without the receiver's GPIO
    and audio packages); ``make run`` still starts everything with one command. The simulator stops
    when this process is gone, even after ``kill -9`` (``--parent-pid``).
    """
    command = [sys.executable, "-m", "receiver", "--log-level", log_level, "sim", "--config-dir", str(config_dir),
               "--parent-pid", str(os.getpid())]
    logger.info("starting the demo receivers: %s", " ".join(command[1:]))
    return subprocess.Popen(command)


def stop_receivers(process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM the simulator, wait ``timeout`` seconds for its agents to say offline, then kill it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("demo receivers did not stop within %g s; killing them", timeout)
            process.kill()
            process.wait()
    return process.returncode
