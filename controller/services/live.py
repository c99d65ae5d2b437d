"""Live voice (nói trực tiếp): a person speaks into the browser and the chosen clusters play it.

The browser records its microphone with MediaRecorder in 250 ms slices and posts each slice
(in order, numbered) to the controller; :class:`LiveVoice` feeds them to an ffmpeg
(:class:`audio.live.LiveEncoder`) that encodes Opus into an Ogg mount of Icecast 2, one mount
per session, and receivers play that mount with their relay engine. The alert that carries
the mount's URL (content ``live``; an emergency or a drill like any other) is sent only once
the mount holds audio, so no receiver knocks on a mount that does not exist yet and waits
out its retry backoff. The session ends when the person stops, when the alert is stopped
or corrected, when no slice came for ``LIVE_IDLE_S`` (the phone lost its network or the
page was closed), or at the alert's end time.

Icecast is the controller's own (:class:`controller.icecast.EmbeddedIcecast`, on loopback,
for one machine) or a configured one (``ICECAST_URL``, its source password in
``ICECAST_SOURCE_PASSWORD``, and ``ICECAST_PUBLIC_URL`` where receivers reach it).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from flask import Flask

from audio.live import LiveEncoder, LiveError, input_format_for
from controller.icecast import OGG_LIVE_BURST, EmbeddedIcecast, IcecastUnavailable, icecast_binary

logger = logging.getLogger(__name__)

MOUNT_READY_TIMEOUT_S = 8.0
"""How long the first slices may take to make the mount appear before the session is given up."""


class LiveUnavailable(Exception):
    """No Icecast is running or configured: live voice cannot work on this controller."""


@dataclass
class Session:
    """One person speaking to an alert's clusters."""

    alert_id: str
    mount: str
    encoder: LiveEncoder
    listen_url: str
    user_id: int
    next_seq: int = 0
    last_chunk: float = field(default_factory=time.monotonic)
    live: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class LiveVoice:
    """Icecast (own or configured), the live sessions, and the encoders feeding them."""

    def __init__(self, app: Flask):
        self.app = app
        self.icecast: EmbeddedIcecast | None = None
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.reason_unavailable = ""
        self.source_base = ""
        self.listen_base = ""
        self.source_password = ""

    # ------------------------------------------------------------ Icecast

    def start(self) -> None:
        """Use the configured Icecast, else start Debian's on loopback; say clearly when there is none."""
        cfg = self.app.config
        if cfg.get("ICECAST_URL"):
            self.source_base = str(cfg["ICECAST_URL"]).rstrip("/")
            self.source_password = str(cfg.get("ICECAST_SOURCE_PASSWORD") or "")
            self.listen_base = str(cfg.get("ICECAST_PUBLIC_URL") or self.source_base).rstrip("/")
            logger.info("live voice through the configured Icecast at %s", self.source_base)
            return
        if str(cfg.get("LIVE_ICECAST", "auto")).lower() == "off":
            self.reason_unavailable = "live voice is off (LIVE_ICECAST=off)"
            return
        if icecast_binary() is None:
            self.reason_unavailable = "Icecast 2 is not installed (apt install icecast2): live voice is unavailable"
            logger.warning("%s", self.reason_unavailable)
            return
        try:
            workdir = Path(cfg["VAR_DIR"]) / "icecast"
            workdir.mkdir(parents=True, exist_ok=True)
            self.icecast = EmbeddedIcecast(workdir, burst_size=OGG_LIVE_BURST).start()
        except IcecastUnavailable as exc:
            self.reason_unavailable = f"Icecast did not start: {exc}"
            logger.error("%s", self.reason_unavailable)
            return
        self.source_base = self.icecast.base_url
        self.listen_base = str(cfg.get("ICECAST_PUBLIC_URL") or self.icecast.base_url).rstrip("/")
        self.source_password = self.icecast.source_password
        logger.info("live voice through Icecast on %s", self.icecast.base_url)

    @property
    def available(self) -> bool:
        """True when an Icecast can carry live voice."""
        return bool(self.source_base)

    def stop(self) -> None:
        """End every session, then Icecast."""
        for alert_id in list(self.sessions):
            self.end(alert_id)
        if self.icecast is not None:
            self.icecast.stop()
            self.icecast = None

    def _source_url(self, mount: str) -> str:
        parts = urlsplit(self.source_base)
        netloc = f"source:{quote(self.source_password, safe='')}@{parts.hostname}" + \
            (f":{parts.port}" if parts.port else "")
        return urlunsplit(("icecast", netloc, mount, "", ""))

    # ------------------------------------------------------------ sessions

    def listen_url_for(self, alert_id: str) -> str:
        """Where receivers will listen to a new session's mount (fixed before the alert is stored)."""
        if not self.available:
            raise LiveUnavailable(self.reason_unavailable or "no Icecast")
        return f"{self.listen_base}/live-{alert_id}.ogg"

    def open(self, alert_id: str, user_id: int, mime_type: str) -> Session:
        """Start the encoder of a session (it waits for the first slice)."""
        if not self.available:
            raise LiveUnavailable(self.reason_unavailable or "no Icecast")
        mount = f"/live-{alert_id}.ogg"
        encoder = LiveEncoder(self._source_url(mount), input_format=input_format_for(mime_type), codec="opus")
        session = Session(alert_id, mount, encoder, self.listen_url_for(alert_id), user_id)
        with self._lock:
            old = self.sessions.pop(alert_id, None)
            self.sessions[alert_id] = session
        if old is not None:
            old.encoder.kill()
        return session

    def feed(self, alert_id: str, seq: int, chunk: bytes) -> Session:
        """One slice, in order (LiveError ``live.out_of_order`` otherwise; ``live.no_session`` when none)."""
        session = self.sessions.get(alert_id)
        if session is None:
            raise LiveError("live.no_session", "no live session for this alert",
                            "Phiên nói trực tiếp đã kết thúc.")
        with session.lock:
            if seq != session.next_seq:
                raise LiveError("live.out_of_order", f"expected slice {session.next_seq}, got {seq}",
                                "Mất một đoạn âm thanh; hãy bắt đầu lại phiên nói trực tiếp.")
            session.encoder.feed(chunk)
            session.next_seq += 1
            session.last_chunk = time.monotonic()
        return session

    def mount_ready(self, session: Session, timeout_s: float = MOUNT_READY_TIMEOUT_S) -> bool:
        """True once Icecast serves the session's mount (the encoder got through), polling up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        url = f"{self.source_base}{session.mount}"
        while time.monotonic() < deadline and session.encoder.running:
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:  # noqa: S310 - our own Icecast
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        return False

    def idle(self, idle_s: float) -> list[str]:
        """Sessions whose last slice is older than ``idle_s`` (the speaker's page is gone)."""
        now = time.monotonic()
        return [a for a, s in list(self.sessions.items()) if now - s.last_chunk > idle_s]

    def end(self, alert_id: str) -> bool:
        """Close a session's encoder (the mount goes away); True when there was one."""
        with self._lock:
            session = self.sessions.pop(alert_id, None)
        if session is None:
            return False
        try:
            session.encoder.close(timeout=3.0)
        except LiveError as exc:
            logger.warning("live %s: %s", alert_id, exc)
        return True
