"""Emergency broadcasts and drills, from the sender's request to every cluster's answer.

An alert is asked for with targets (areas, or clusters picked one by one), content
(a ready bulletin, a typed text, a prepared template, or a live stream) and options
(volume, chime, repeat count and gap, an end time). Its life:

``awaiting_confirm`` (an area that needs a second person) → ``queued`` (another alert
holds some of its clusters and the sender chose to wait) → ``preparing`` (its sound is
made: chime, a drill's spoken notice, the message N times, chime; a sound made before
from the same inputs is reused at once) → ``running`` (one signed command per target
scope and the retained alert state, :mod:`controller.services.alerts`) → ``ended`` (its
sound is over, or its end time came) or ``stopped`` (a person stopped it, a correction or
a replacing alert took its place); ``failed`` when its sound could not be made, and
``cancelled`` when it never started.

What each cluster did is read from the events it reported (``command.ack``,
``playback.*`` carry the alert id as ``item_id``; ``command.refused`` carries one of
its nonces) and from presence: :func:`live_status`.

Drill and live are distinct actions on the wire (``drill`` / ``emergency``), never a
flag. Nothing here trusts what a person typed: texts are data, URLs are checked.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from audio import alerts as alert_sound
from audio import assemble, pipeline, tts
from audio.errors import AudioError
from controller.db import session_scope
from controller.errors import ApiError
from controller.models import (
    ALERT_OPEN,
    Alert,
    AlertSound,
    AlertTemplate,
    Area,
    Bulletin,
    Event,
    Media,
    Receiver,
    StreamSource,
)
from controller.services import alerts as wire
from controller.services import areas
from controller.services.catalogue import pipeline_settings, tts_settings
from controller.services.programme import audit, media_ref
from schedules import events as ev
from schedules.events import now_ms

logger = logging.getLogger(__name__)

MODES = ("live", "drill")
ACTION_OF_MODE = {"live": "emergency", "drill": "drill"}
CONTENT_KINDS = ("bulletin", "text", "template", "stream", "live")
"""``live``: a person speaking now (:mod:`controller.services.live`); its stream URL is the controller's own."""
WHEN_RUNNING = ("queue", "replace")
STREAM_SCHEMES = ("http", "https")
"""Schemes a receiver's relay engine plays (its ffmpeg reads them); rtsp and rtmp are refused by name."""
REFUSED_SCHEMES = ("rtsp", "rtmp")
DEFAULT_STREAM_MS = 30 * 60 * 1000
"""A stream alert without an end time runs this long unless stopped."""
MAX_DURATION_MS = 6 * 3600 * 1000
MAX_TEXT = 5000
TEMPLATE_TOPICS = ("storm", "flood", "fire", "epidemic", "correction", "all_clear", "other")


def _bad(code: str, message: str, message_vi: str, status: int = 400) -> ApiError:
    return ApiError(status, code, message, message_vi)


@dataclass
class Targets:
    """What an alert reaches: the scopes its commands go to and the clusters behind them."""

    areas: list[str]
    receivers: list[str]
    scopes: list[str]
    rx_ids: list[str]
    owner: str
    names: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """The areas by name, for the confirm step ("xã Quảng Phú, xã Quảng An")."""
        return ", ".join(self.names)


LEVEL_VI = {"province": "tỉnh", "district": "huyện", "commune": "xã"}


def area_label(area: Area) -> str:
    """``xã Quảng Phú``: the level's word, then the name."""
    word = LEVEL_VI.get(area.level, "")
    return f"{word} {area.name}".strip()


def resolve_targets(db: Session, principal, area_ids: list[Any], rx_ids: list[Any]) -> Targets:
    """Check and expand what the sender picked: every target must lie in the sender's areas.

    An area inside another picked area adds nothing (its clusters follow the wider scope too).
    """
    if not isinstance(area_ids, list) or not isinstance(rx_ids, list) or len(area_ids) + len(rx_ids) > 2000:
        raise _bad("alert.bad_targets", "areas and receivers must be lists of ids", "Danh sách nơi phát không hợp lệ.")
    if not area_ids and not rx_ids:
        raise _bad("alert.no_targets", "pick at least one area or cluster",
                   "Hãy chọn ít nhất một địa bàn hoặc cụm loa.")
    picked: list[Area] = []
    for raw in dict.fromkeys(str(a) for a in area_ids):
        area = db.get(Area, raw)
        if area is None or not principal.may_touch(db, area.id):
            # As for every object outside the caller's areas: the same answer as an unknown id.
            raise _bad("area.not_found", f"no area {raw!r}", "Không tìm thấy địa bàn đã chọn (hoặc bạn không có "
                       "quyền phát tới đó).", 404)
        picked.append(area)
    picked_ids = {a.id for a in picked}
    # Drop an area whose ancestor is also picked.
    kept = [a for a in picked if not any(p.id in picked_ids and p.id != a.id for p in areas.ancestors(db, a.id))]
    kept_ids = {a.id for a in kept}
    covered: set[str] = set()
    for a in kept:
        covered |= areas.subtree_ids(db, a.id)
    receivers: list[Receiver] = []
    for raw in dict.fromkeys(str(r) for r in rx_ids):
        rx = db.get(Receiver, raw)
        if rx is None or rx.retired_ms is not None or not principal.may_touch(db, rx.area_id):
            raise _bad("receiver.not_found", f"no receiver {raw!r}", "Không tìm thấy cụm loa đã chọn (hoặc bạn "
                       "không có quyền phát tới đó).", 404)
        if rx.area_id not in covered:
            receivers.append(rx)
    in_areas = db.scalars(select(Receiver.id).where(Receiver.area_id.in_(covered), Receiver.retired_ms.is_(None))
                          .order_by(Receiver.id)).all() if covered else []
    rx_all = list(dict.fromkeys([*in_areas, *(r.id for r in receivers)]))
    scopes = [f"area/{a.id}" for a in kept] + [f"rx/{r.id}" for r in receivers]
    names = [area_label(a) for a in kept]
    if receivers:
        names.append(", ".join(r.name for r in receivers[:5]) + (" …" if len(receivers) > 5 else ""))
    owner = _common_area(db, [a.id for a in kept] + [r.area_id for r in receivers])
    return Targets(sorted(kept_ids), [r.id for r in receivers], scopes, rx_all, owner, names)


def _common_area(db: Session, area_ids: list[str]) -> str:
    """The nearest area containing all of ``area_ids`` (the alert's owner, for who may see it)."""
    chains = [[a.id for a in reversed(areas.ancestors(db, aid))] + [aid] for aid in area_ids]
    common = chains[0]
    for chain in chains[1:]:
        n = 0
        while n < min(len(common), len(chain)) and common[n] == chain[n]:
            n += 1
        common = common[:n]
    return common[-1] if common else area_ids[0]


def own_endpoints(config: Any) -> set[str]:
    """``host:port`` where the controller itself answers (its listener and its public URL)."""
    out = set()
    host = str(config.get("HTTP_HOST") or "").lower()
    if host and host != "0.0.0.0":
        out.add(f"{host}:{int(config.get('HTTP_PORT') or 80)}")
    public = urlsplit(str(config.get("PUBLIC_URL") or ""))
    if public.hostname:
        out.add(f"{public.hostname.lower()}:{public.port or (443 if public.scheme == 'https' else 80)}")
    return out


def check_stream_url(url: Any, *, allow_private: bool, own: set[str]) -> str:
    """An http(s) URL that is not the controller itself (``own``: its ``host:port``) nor (unless allowed) a
    private address. Another port of the controller's machine (its Icecast, a studio encoder) is fine."""
    if not isinstance(url, str) or not url or len(url) > 1000:
        raise _bad("alert.bad_url", "url: an http(s) stream URL up to 1000 characters",
                   "Địa chỉ luồng phát không hợp lệ.")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme in REFUSED_SCHEMES:
        raise _bad("alert.url_scheme", f"{scheme} streams cannot be relayed by the receivers; give an http(s) URL "
                   "(Icecast, HLS)", "Cụm loa chỉ thu được luồng http(s) (Icecast, HLS); hãy nhập địa chỉ http(s).")
    if scheme not in STREAM_SCHEMES or not parts.hostname:
        raise _bad("alert.bad_url", "url must be an http(s) URL with a host", "Địa chỉ luồng phát phải bắt đầu bằng "
                   "http:// hoặc https://.")
    host = parts.hostname.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise _bad("alert.bad_url", "the URL's port is not a number", "Cổng trong địa chỉ luồng phát không hợp lệ.") \
            from exc
    if f"{host}:{port}" in own:
        raise _bad("alert.url_forbidden", "the stream URL points at the controller itself",
                   "Địa chỉ luồng phát trỏ vào chính máy chủ điều khiển.")
    if not allow_private and _is_private(host):
        raise _bad("alert.url_forbidden", "the stream URL points at a private or loopback address "
                   "(set ALERT_ALLOW_PRIVATE_STREAMS to allow)", "Địa chỉ luồng phát là địa chỉ nội bộ, không được "
                   "phép.")
    return url.strip()


def _is_private(host: str) -> bool:
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            addresses = [ipaddress.ip_address(info[4][0]) for info in socket.getaddrinfo(host, None)]
        except (OSError, UnicodeError):
            return False  # unresolvable now: the receivers will say so (relay.unavailable)
    return any(a.is_private or a.is_loopback or a.is_link_local or a.is_unspecified or a.is_reserved
               for a in addresses)


def templates_for(db: Session, principal) -> list[AlertTemplate]:
    """The prepared texts the sender may use: everyone's, then those of the sender's areas."""
    visible = areas.subtree_ids(db, principal.area_id)
    rows = db.scalars(select(AlertTemplate).order_by(AlertTemplate.id)).all()
    mine: list[AlertTemplate] = []
    for t in rows:
        if t.area_id is None or t.area_id in visible or (principal.area_id is not None
                                                          and areas.is_within(db, principal.area_id, t.area_id)):
            mine.append(t)
    return mine


def stream_sources_for(db: Session, principal) -> list[StreamSource]:
    """Saved streams the caller may relay: everyone's, those of their areas, and those of the areas above."""
    visible = areas.subtree_ids(db, principal.area_id)
    above = {a.id for a in areas.ancestors(db, principal.area_id)} if principal.area_id else set()
    return [s for s in db.scalars(select(StreamSource).order_by(StreamSource.name))
            if s.area_id is None or s.area_id in visible or s.area_id in above]


def correction_template(db: Session, area_id: str) -> AlertTemplate | None:
    """The area's own correction text (nearest area up), else everyone's."""
    chain = [area_id] + [a.id for a in areas.ancestors(db, area_id)]
    rows = db.scalars(select(AlertTemplate).where(AlertTemplate.topic == "correction")).all()
    for aid in chain:
        for t in rows:
            if t.area_id == aid:
                return t
    return next((t for t in rows if t.area_id is None), None)


def overlapping_open(db: Session, rx_ids: list[str], *, exclude: str | None = None) -> list[Alert]:
    """Open alerts (waiting, preparing, running) that would reach one of ``rx_ids``."""
    wanted = set(rx_ids)
    found = []
    for row in db.scalars(select(Alert).where(Alert.status.in_(("queued", "preparing", "running")))):
        if row.id != exclude and wanted & set(json.loads(row.target_rx or "[]")):
            found.append(row)
    return found


def needs_confirm(db: Session, targets: Targets) -> bool:
    """True when a live alert to these targets needs a second person (an area, or one above it, asks so)."""
    ids = set(targets.areas) | {r.area_id for r in (db.get(Receiver, x) for x in targets.receivers) if r}
    for aid in ids:
        chain = [db.get(Area, aid), *areas.ancestors(db, aid)]
        if any(a is not None and a.alert_needs_confirm for a in chain):
            return True
    return False


def _int(data: dict, key: str, low: int, high: int, default: int, code: str, vi: str) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _bad(code, f"{key} must be a number from {low} to {high}", vi)
    return int(value)


@dataclass
class Request:
    """A validated alert request (nothing stored yet)."""

    mode: str
    targets: Targets
    content_kind: str
    title: str
    volume: int
    chime: bool
    repeat: int
    gap_s: float
    until_ms: int | None
    when_running: str | None
    bulletin: Bulletin | None = None
    template: AlertTemplate | None = None
    text: str | None = None
    stream_url: str | None = None
    corrects: Alert | None = None


def parse_request(db: Session, principal, data: dict, *, config: dict, now: int,
                  corrects: Alert | None = None) -> Request:
    """Validate everything an alert request says; ApiError with a Vietnamese message for the first problem."""
    if not principal.may_alert:
        raise _bad("alert.forbidden", "you may not send emergency broadcasts", "Bạn không có quyền phát khẩn cấp.", 403)
    mode = data.get("mode")
    if mode not in MODES:
        raise _bad("alert.bad_mode", "mode must be 'live' or 'drill'",
                   "Hãy chọn phát thật hay diễn tập.")
    targets = resolve_targets(db, principal, data.get("areas") or [], data.get("receivers") or [])
    if not targets.rx_ids:
        raise _bad("alert.no_receivers", "no cluster is installed in the chosen areas",
                   "Chưa có cụm loa nào ở nơi đã chọn.", 422)
    content = data.get("content")
    if not isinstance(content, dict) or content.get("kind") not in CONTENT_KINDS:
        raise _bad("alert.no_content", "content.kind must be one of " + ", ".join(CONTENT_KINDS),
                   "Hãy chọn nội dung phát: bản tin, văn bản, mẫu soạn sẵn hoặc luồng trực tiếp.")
    kind = content["kind"]
    req = Request(mode=mode, targets=targets, content_kind=kind, title="", volume=0, chime=True, repeat=3,
                  gap_s=4.0, until_ms=None, when_running=None, corrects=corrects)
    if kind == "bulletin":
        bid = content.get("bulletin_id")
        b = db.get(Bulletin, bid) if isinstance(bid, int) and not isinstance(bid, bool) else None
        if b is None or not principal.may_touch(db, b.area_id):
            raise _bad("alert.bad_bulletin", "no such bulletin", "Không tìm thấy bản tin.", 404)
        if b.status != "ready" or b.media is None:
            raise _bad("alert.bulletin_not_ready", "the bulletin is not ready to play",
                       "Bản tin chưa xử lý xong, chưa phát được.", 409)
        req.bulletin, req.title = b, b.title
    elif kind in ("text", "template"):
        text: Any
        if kind == "template":
            tid = content.get("template_id")
            t = db.get(AlertTemplate, tid) if isinstance(tid, int) and not isinstance(tid, bool) else None
            if t is None or t not in templates_for(db, principal):
                raise _bad("alert.bad_template", "no such template", "Không tìm thấy mẫu thông báo.", 404)
            req.template, req.title, text = t, t.name, t.text
        else:
            text = content.get("text")
        if not isinstance(text, str) or not text.strip():
            raise _bad("alert.no_content", "text must not be empty", "Hãy nhập nội dung thông báo.")
        if len(text) > MAX_TEXT:
            raise _bad("alert.text_too_long", f"text: at most {MAX_TEXT} characters",
                       f"Nội dung tối đa {MAX_TEXT} ký tự.")
        req.text = text.strip()
        if not req.title:
            req.title = req.text.split(".")[0][:120]
    elif kind == "live":
        req.title = "Nói trực tiếp"
    else:
        req.stream_url = check_stream_url(content.get("url"), own=own_endpoints(config),
                                          allow_private=bool(config.get("ALERT_ALLOW_PRIVATE_STREAMS")))
        req.title = str(content.get("name") or "")[:200] or "Tiếp sóng khẩn cấp"
    title = data.get("title")
    if isinstance(title, str) and title.strip():
        req.title = title.strip()[:300]
    req.volume = _int(data, "volume", 0, 100, 100, "alert.bad_volume", "Âm lượng phải từ 0 đến 100.")
    req.repeat = _int(data, "repeat", alert_sound.REPEAT_RANGE[0], alert_sound.REPEAT_RANGE[1], 3,
                      "alert.bad_repeat", "Số lần phát phải từ 1 đến 5.")
    gap = data.get("gap_s", 4.0)
    if isinstance(gap, bool) or not isinstance(gap, int | float) or not \
            alert_sound.GAP_RANGE_S[0] <= gap <= alert_sound.GAP_RANGE_S[1]:
        raise _bad("alert.bad_gap", "gap_s must be 0-30 seconds", "Khoảng nghỉ phải từ 0 đến 30 giây.")
    req.gap_s = float(gap)
    chime = data.get("chime", True)
    if not isinstance(chime, bool):
        raise _bad("alert.bad_chime", "chime must be true or false", "Lựa chọn chuông không hợp lệ.")
    req.chime = chime
    until = data.get("until_ms")
    if until is not None:
        if isinstance(until, bool) or not isinstance(until, int):
            raise _bad("alert.bad_end", "until_ms must be epoch milliseconds", "Giờ kết thúc không hợp lệ.")
        if until <= now:
            raise _bad("alert.end_in_past", "the end time is in the past", "Giờ kết thúc đã qua.")
        if until - now > MAX_DURATION_MS:
            raise _bad("alert.end_too_far", "an alert lasts at most 6 hours", "Bản tin khẩn cấp kéo dài tối đa 6 giờ.")
        req.until_ms = until
    when = data.get("if_running")
    if when is not None and when not in WHEN_RUNNING:
        raise _bad("alert.bad_choice", "if_running must be 'queue' or 'replace'",
                   "Hãy chọn xếp hàng hoặc thay thế bản tin đang phát.")
    req.when_running = when
    return req


def create(db: Session, principal, req: Request, *, now: int) -> tuple[Alert, list[Alert]]:
    """Store a validated request as an alert; ``(alert, alerts it will replace)``. The caller commits, then
    calls :meth:`Emergencies.advance`.

    Another open alert on some of the same clusters needs an explicit choice (409 ``alert.running``).
    """
    clash = overlapping_open(db, req.targets.rx_ids)
    if req.corrects is not None:
        clash = [a for a in clash if a.id != req.corrects.id]
    if clash and req.when_running is None:
        names = ", ".join(a.title for a in clash[:3])
        raise ApiError(409, "alert.running", f"another alert is on some of these clusters ({len(clash)}); "
                       "choose if_running 'queue' or 'replace'",
                       f"Đang có bản tin khẩn cấp trên một số cụm loa này ({names}). Hãy chọn: xếp hàng chờ "
                       "bản tin đó xong, hoặc thay thế nó.")
    confirm = req.mode == "live" and needs_confirm(db, req.targets)
    status = "awaiting_confirm" if confirm else ("queued" if clash and req.when_running == "queue" else "preparing")
    alert = Alert(
        id="al-" + uuid.uuid4().hex[:20], mode=req.mode, status=status, title=req.title,
        area_id=req.targets.owner,
        targets=json.dumps({"areas": req.targets.areas, "receivers": req.targets.receivers}),
        scopes=json.dumps(req.targets.scopes), target_rx=json.dumps(req.targets.rx_ids),
        content_kind=req.content_kind, bulletin_id=req.bulletin.id if req.bulletin else None,
        template_id=req.template.id if req.template else None, text=req.text, stream_url=req.stream_url,
        volume=req.volume, chime=req.chime, repeat=req.repeat, gap_s=req.gap_s, until_ms=req.until_ms,
        corrects_id=req.corrects.id if req.corrects else None,
        replaces_id=clash[0].id if clash and req.when_running == "replace" else None,
        created_by=principal.id, created_ms=now)
    db.add(alert)
    audit(db, principal.id, "alert_" + ("drill" if req.mode == "drill" else "live"), "alert", alert.id,
          {"title": req.title, "scopes": req.targets.scopes, "clusters": len(req.targets.rx_ids),
           "content": req.content_kind, "bulletin": alert.bulletin_id, "template": alert.template_id,
           "stream_url": req.stream_url, "volume": req.volume, "repeat": req.repeat, "gap_s": req.gap_s,
           "chime": req.chime, "until_ms": req.until_ms, "status": status, "if_running": req.when_running,
           "corrects": alert.corrects_id})
    replaced = clash if req.when_running == "replace" and not confirm else []
    return alert, replaced


def sound_key(alert: Alert, source: str, engines: tuple[str, ...]) -> str:
    """What an alert's sound is made of, hashed: the same inputs give the same sound."""
    spec = {"source": source, "mode": alert.mode, "repeat": alert.repeat, "gap_s": alert.gap_s,
            "chime": alert.chime, "engines": list(engines), "v": 1}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def tts_would_fall_back(config: dict) -> bool:
    """True when the first text-to-speech engine configured is the offline espeak-ng voice, or gTTS is not
    reachable now: the emergency screen then offers recording or live voice first."""
    settings = tts_settings(config)
    engines = [e for e in settings.engines if e in tts.available(settings)]
    if not engines or engines[0] == "espeak":
        return True
    if engines[0] == "gtts":
        return not tts.gtts_reachable(settings)
    return False


class Emergencies:
    """The controller's alert worker: makes sounds off the request thread and moves alerts along their life.

    One thread of its own (an alert never waits behind a long upload in the catalogue's pool).
    ``publish`` and ``key`` are the runtime's; :meth:`notify` wakes the live views after every change.
    """

    def __init__(self, app: Flask, key, publish):
        self.app = app
        self.key = key
        self.publish = publish
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alert")
        self.changed = threading.Condition()
        self.generation = 0
        self.sounds_dir = Path(app.config["VAR_DIR"]) / "alert-sounds"
        self.on_end: list[Callable[[str], object]] = []
        """Called with the alert id after an alert ended (live voice closes its session)."""

    def shutdown(self) -> None:
        """Finish the sound being made; drop queued work."""
        self.pool.shutdown(wait=True, cancel_futures=True)

    def notify(self) -> None:
        """Wake the live views: something changed."""
        with self.changed:
            self.generation += 1
            self.changed.notify_all()

    # ------------------------------------------------------------------ life cycle

    def advance(self, alert_id: str, replaced: list[str] | None = None, by: int | None = None) -> None:
        """After a commit: end what it replaces, then make its sound (in the worker) and start it."""
        for other in replaced or []:
            self.end(other, "replaced", by=by)
        with session_scope(self.app) as db:
            alert = db.get(Alert, alert_id)
            status = alert.status if alert else None
            live = alert is not None and alert.content_kind == "live"
        if status == "preparing" and not live:  # a live alert starts once its mount holds audio: go_live
            self.pool.submit(self._prepare_and_start, alert_id)
        self.notify()

    def go_live(self, alert_id: str) -> None:
        """The live voice's mount holds audio: send the alert now."""
        self.pool.submit(self._prepare_and_start, alert_id)

    def _prepare_and_start(self, alert_id: str) -> None:
        try:
            with session_scope(self.app) as db:
                alert = db.get(Alert, alert_id)
                if alert is None or alert.status != "preparing":
                    return
                work = self._sound_work(db, alert)
            sha, duration, engine = work() if work else (None, None, None)
            with session_scope(self.app) as db:
                alert = db.get(Alert, alert_id)
                if alert is None or alert.status != "preparing":
                    return  # stopped while its sound was made
                alert.media_sha256, alert.tts_engine = sha, engine
                self._start(db, alert, duration)
        except AudioError as exc:
            self._fail(alert_id, exc.code, exc.message, exc.message_vi)
        except Exception:  # noqa: BLE001 - the alert fails visibly; the worker lives on
            logger.exception("alert %s: could not be prepared", alert_id)
            self._fail(alert_id, "alert.internal", "internal error while preparing the alert",
                       "Lỗi nội bộ khi chuẩn bị bản tin khẩn cấp.")
        finally:
            self.notify()

    def _fail(self, alert_id: str, code: str, message: str, message_vi: str) -> None:
        with session_scope(self.app) as db:
            alert = db.get(Alert, alert_id)
            if alert is not None and alert.status == "preparing":
                alert.status, alert.error_code = "failed", code
                alert.error_message, alert.error_message_vi = message, message_vi
                alert.ended_ms = now_ms()
                audit(db, None, "alert_failed", "alert", alert.id, {"code": code})
        logger.error("alert %s failed: %s %s", alert_id, code, message)

    def _start(self, db: Session, alert: Alert, duration_ms: int | None) -> None:
        """Send it: one signed command per scope and the retained state; the alert is running."""
        now = now_ms()
        if alert.content_kind in ("stream", "live"):
            duration = (alert.until_ms - now) if alert.until_ms else DEFAULT_STREAM_MS
        else:
            assert duration_ms is not None
            duration = duration_ms if alert.until_ms is None else max(1000, min(duration_ms, alert.until_ms - now))
        args: dict[str, Any] = {"id": alert.id, "volume": alert.volume, "title": alert.title[:200]}
        if alert.media_sha256:
            media = db.get(Media, alert.media_sha256)
            assert media is not None
            args["media"] = {"sha256": media.sha256, "path": f"/media/{media.sha256}.{media.format}",
                             "bytes": media.bytes, "duration_ms": media.duration_ms, "format": media.format}
        if alert.stream_url:
            args["url"] = alert.stream_url
        # Who it is meant for, as it starts (a queued alert waited; clusters may have come or gone).
        targets = json.loads(alert.targets)
        alert.target_rx = json.dumps(_receivers_of(db, targets["areas"], targets["receivers"]))
        sent = wire.broadcast(self.publish, self.key, json.loads(alert.scopes), ACTION_OF_MODE[alert.mode], args,
                              duration_ms=duration, now=now)
        alert.nonces = json.dumps([s.command.nonce for s in sent])
        alert.status, alert.started_ms, alert.ends_ms, alert.duration_ms = "running", now, now + duration, duration
        audit(db, None, "alert_started", "alert", alert.id, {"scopes": len(sent), "duration_ms": duration})
        logger.warning("alert %s (%s) running on %d scope(s) for %d ms", alert.id, alert.mode, len(sent), duration)

    def end(self, alert_id: str, reason: str, *, by: int | None = None) -> bool:
        """End an open alert (stop, replaced, corrected, its time is over): clear its state, stop it everywhere.

        True when it was open. Starts the alerts that queued behind it.
        """
        with session_scope(self.app) as db:
            alert = db.get(Alert, alert_id)
            if alert is None or alert.status not in ALERT_OPEN:
                return False
            was_running = alert.status == "running"
            if was_running:
                # Silence first, then the record: should the commit fail, the alert reads "running" and a second
                # stop sends the stop again (harmless); the other order could leave speakers playing an alert
                # that every screen calls stopped.
                wire.end(self.publish, self.key, json.loads(alert.scopes), alert.id)
            alert.status = "ended" if reason == "complete" else ("stopped" if was_running else "cancelled")
            alert.ended_ms, alert.ended_by, alert.end_reason = now_ms(), by, reason
            audit(db, by, "alert_" + ("end" if reason == "complete" else "stop"), "alert", alert.id,
                  {"reason": reason, "was": "running" if was_running else "waiting"})
        for hook in self.on_end:
            try:
                hook(alert_id)
            except Exception:  # noqa: BLE001 - the alert has ended whatever a hook does
                logger.exception("alert %s: an end hook failed", alert_id)
        self.start_queued()
        self.notify()
        return True

    def confirm(self, alert_id: str, principal) -> None:
        """A second person confirms a live alert: it goes on (preparing, or queued behind a running one)."""
        with session_scope(self.app) as db:
            alert = db.get(Alert, alert_id)
            assert alert is not None
            clash = overlapping_open(db, json.loads(alert.target_rx or "[]"), exclude=alert.id)
            # The sender chose to replace what runs there: that choice holds once confirmed.
            replaced = [a.id for a in clash] if alert.replaces_id is not None else []
            alert.confirmed_by, alert.confirmed_ms = principal.id, now_ms()
            alert.status = "queued" if clash and not replaced else "preparing"
            audit(db, principal.id, "alert_confirm", "alert", alert.id,
                  {"queued": alert.status == "queued", "replaces": replaced})
        self.advance(alert_id, replaced, by=principal.id)

    def tick(self) -> int:
        """End running alerts whose time is over; start queued ones that are free. The number ended.

        An alert's sound is over by the controller's clock at ``ends_ms``, but each cluster started it when
        its command (and the media) reached it, a short lead later: it ends that much after. Ending the
        alert clears its state and stops it by id, which would cut their closing chime; so the natural end
        waits for the clusters still playing it (:func:`still_playing`), at most ``END_WAIT_MS``.
        """
        now = now_ms()
        with session_scope(self.app) as db:
            due = [a.id for a in db.scalars(select(Alert).where(Alert.status == "running", Alert.ends_ms <= now))
                   if now >= (a.ends_ms or 0) + END_WAIT_MS or not still_playing(db, a.id)]
        for alert_id in due:
            self.end(alert_id, "complete")
        self.start_queued()
        return len(due)

    def start_queued(self) -> None:
        """Queued alerts whose clusters are free now go on, oldest first."""
        with session_scope(self.app) as db:
            queued = db.scalars(select(Alert).where(Alert.status == "queued").order_by(Alert.created_ms)).all()
            ready = []
            for alert in queued:
                if not overlapping_open(db, json.loads(alert.target_rx or "[]"), exclude=alert.id):
                    alert.status = "preparing"
                    ready.append(alert.id)
                    db.flush()
        for alert_id in ready:
            self.pool.submit(self._prepare_and_start, alert_id)

    # ------------------------------------------------------------------ sound

    def _sound_work(self, db: Session, alert: Alert):
        """A callable making the alert's sound (sha256, duration ms, tts engine), or None for a stream."""
        if alert.content_kind in ("stream", "live"):
            return None
        settings = tts_settings(self.app.config)
        if alert.content_kind == "bulletin":
            b = db.get(Bulletin, alert.bulletin_id)
            ref = media_ref(b)
            if ref is None:
                raise AudioError("alert.bulletin_not_ready", "the bulletin is no longer ready",
                                 "Bản tin không còn sẵn sàng để phát.")
            source_key, source_path, text = f"media:{ref.sha256}", Path(self.app.config["MEDIA_DIR"]) / \
                f"{ref.sha256}.{ref.format}", None
        else:
            text = alert.text or ""
            source_key, source_path = "text:" + hashlib.sha256(text.encode()).hexdigest(), None
        key = sound_key(alert, source_key, settings.engines)
        cached = db.get(AlertSound, key)
        media = db.get(Media, cached.media_sha256) if cached is not None else None
        if cached is not None and media is not None \
                and (Path(self.app.config["MEDIA_DIR"]) / f"{media.sha256}.{media.format}").exists():
            found = (media.sha256, media.duration_ms, cached.tts_engine)
            return lambda: found
        mode, repeat, gap_s, chime = alert.mode, alert.repeat, alert.gap_s, alert.chime

        def work() -> tuple[str, int, str | None]:
            return self._render(key, source_path, text, mode=mode, repeat=repeat, gap_s=gap_s, chime=chime)

        return work

    def _render(self, key: str, source: Path | None, text: str | None, *, mode: str, repeat: int, gap_s: float,
                chime: bool) -> tuple[str, int, str | None]:
        """Chime, (drill notice), message × repeat, (drill end), chime: normalised into the media store."""
        settings = tts_settings(self.app.config)
        self.sounds_dir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="alert-", dir=self.sounds_dir))
        try:
            engine = None
            if source is None:
                speech = tts.synthesize(text or "", workdir, settings)
                source, engine = speech.path, speech.engine
            drill = None
            if mode == "drill":
                drill = (self._spoken(alert_sound.DRILL_NOTICE_VI, settings),
                         self._spoken(alert_sound.DRILL_END_VI, settings))
            chimes = alert_sound.chimes(self.sounds_dir) if chime else None
            out = workdir / "alert.wav"
            assemble.join(alert_sound.sequence(source, repeat=repeat, gap_s=gap_s, chime=chimes, drill=drill), out)
            prepared = pipeline.prepare(out, Path(self.app.config["MEDIA_DIR"]),
                                        settings=pipeline_settings(self.app.config))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        with session_scope(self.app) as db:
            if db.get(Media, prepared.sha256) is None:
                db.add(Media(sha256=prepared.sha256, format=prepared.format, bytes=prepared.bytes,
                             duration_ms=prepared.duration_ms, created_ms=now_ms(),
                             loudness_lufs=prepared.loudness_lufs, true_peak_db=prepared.peak_db,
                             peaks=json.dumps(list(prepared.peaks))))
                db.flush()
            if db.get(AlertSound, key) is None:
                db.add(AlertSound(key=key, media_sha256=prepared.sha256, tts_engine=engine, created_ms=now_ms()))
        return prepared.sha256, prepared.duration_ms, engine

    def _spoken(self, text: str, settings: tts.TtsSettings) -> Path:
        """A fixed phrase spoken once and kept (the drill's notice)."""
        name = hashlib.sha256(f"{text}|{settings.engines}".encode()).hexdigest()[:24]
        path = self.sounds_dir / f"phrase-{name}.wav"
        if not path.exists():
            tmp = Path(tempfile.mkdtemp(prefix="phrase-", dir=self.sounds_dir))
            try:
                speech = tts.synthesize(text, tmp, settings)
                assemble.join([speech.path], path.with_suffix(".part.wav"))
                path.with_suffix(".part.wav").replace(path)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return path


def _receivers_of(db: Session, area_ids: list[str], rx_ids: list[str]) -> list[str]:
    covered: set[str] = set()
    for aid in area_ids:
        covered |= areas.subtree_ids(db, aid)
    found = list(db.scalars(select(Receiver.id).where(Receiver.area_id.in_(covered), Receiver.retired_ms.is_(None))
                            .order_by(Receiver.id)).all()) if covered else []
    return list(dict.fromkeys([*found, *rx_ids]))


END_WAIT_MS = 30_000
"""How long an alert's natural end waits, after its sound is over by the controller's clock, for clusters
still playing it (one that had to fetch the media started late, and plays it whole)."""


def still_playing(db: Session, alert_id: str) -> set[str]:
    """The clusters that took the alert by its command or started playing it, and have not reported its end."""
    rows = db.execute(select(Event.rx_id, Event.type, Event.body).where(
        Event.item_id == alert_id,
        Event.type.in_((ev.COMMAND_ACK, ev.PLAYBACK_STARTED, ev.PLAYBACK_FINISHED, ev.PLAYBACK_FAILED)))).all()
    taken, over = set(), set()
    for rx_id, type_, body in rows:
        if type_ in (ev.PLAYBACK_FINISHED, ev.PLAYBACK_FAILED):
            over.add(rx_id)
        elif type_ == ev.PLAYBACK_STARTED or not json.loads(body).get("joined"):
            # A join from the alert state near its end may find nothing left to play (and report no end).
            taken.add(rx_id)
    return taken - over


# ---------------------------------------------------------------------- what each cluster did

SETTLE_MS = 15_000
"""After an alert ends, how long a cluster last heard playing it may take to report its end."""

CLUSTER_STATES = ("playing", "finished", "acknowledged", "waiting", "failed", "refused", "offline", "silent",
                  "not_sent")
"""What one cluster did with an alert, from the best news to the worst (see :func:`cluster_state`)."""


def cluster_state(events_of_rx: list[dict], online: bool, alert: Alert) -> tuple[str, str | None]:
    """``(state, reason)`` of one cluster from its events about this alert (oldest first) and its presence.

    ``playing``/``finished``/``failed`` from ``playback.*``; ``acknowledged`` from ``command.ack``;
    ``refused`` from ``command.refused``; with no word from it: ``offline`` when it is offline, else
    ``waiting`` while the alert runs and ``silent`` (no answer) once it is over. A cluster that never had
    the command (the alert did not start) is ``not_sent``.
    """
    kinds = [e["type"] for e in events_of_rx]
    last = {e["type"]: e for e in events_of_rx}
    # The latest play decides: a cluster that restarted and joined again plays, whatever it said before.
    plays = [e for e in events_of_rx if e["type"] in (ev.PLAYBACK_STARTED, ev.PLAYBACK_FINISHED, ev.PLAYBACK_FAILED)]
    latest = plays[-1]["type"] if plays else None
    if latest == ev.PLAYBACK_FINISHED:
        return "finished", last[ev.PLAYBACK_FINISHED].get("end_reason")
    if latest == ev.PLAYBACK_FAILED:
        return "failed", last[ev.PLAYBACK_FAILED].get("code")
    if latest == ev.PLAYBACK_STARTED:
        # Last heard playing: so it is shown until its end had time to be reported (then: no end reported).
        settling = alert.ended_ms is not None and now_ms() - alert.ended_ms < SETTLE_MS
        return ("playing", None) if alert.status == "running" or settling else ("finished", "no_end_reported")
    if ev.COMMAND_ACK in kinds:
        return "acknowledged", None
    if ev.COMMAND_REFUSED in last:
        return "refused", last[ev.COMMAND_REFUSED].get("code")
    if alert.started_ms is None:
        return "not_sent", None
    if not online:
        return "offline", "offline"
    return ("waiting", None) if alert.status == "running" else ("silent", "no_answer")


def live_status(db: Session, alert: Alert) -> dict[str, Any]:
    """Per cluster and per area: what happened to this alert (for the live view and the API)."""
    rx_ids = json.loads(alert.target_rx or "[]")
    nonces = set(json.loads(alert.nonces or "[]"))
    rows = db.execute(select(Event.rx_id, Event.type, Event.body, Event.ts_ms)
                      .where(Event.item_id == alert.id).order_by(Event.ts_ms)).all()
    refused = db.execute(select(Event.rx_id, Event.type, Event.body, Event.ts_ms)
                         .where(Event.type == ev.COMMAND_REFUSED, Event.received_ms >= (alert.started_ms or 0),
                                Event.rx_id.in_(rx_ids))).all() if nonces and rx_ids else []
    per_rx: dict[str, list[dict]] = {}
    for rx_id, _type, body, _ts in [*rows, *refused]:
        data = json.loads(body)
        if data.get("type") == ev.COMMAND_REFUSED and data.get("nonce") not in nonces:
            continue
        per_rx.setdefault(rx_id, []).append(data)
    for evs in per_rx.values():
        evs.sort(key=lambda e: int(e["ts"]) if isinstance(e.get("ts"), int) else 0)  # oldest first
    receivers = {r.id: r for r in db.scalars(select(Receiver).where(Receiver.id.in_(rx_ids)))} if rx_ids else {}
    area_names = {a.id: a.name for a in db.scalars(select(Area))}
    clusters = []
    per_area: dict[str, dict[str, int]] = {}
    for rx_id in rx_ids:
        rx = receivers.get(rx_id)
        state, reason = cluster_state(per_rx.get(rx_id, []), bool(rx and rx.online), alert)
        area = rx.area_id if rx else ""
        clusters.append({"id": rx_id, "name": rx.name if rx else rx_id, "area": area,
                         "area_name": area_names.get(area, area), "state": state, "reason": reason,
                         "lat": rx.lat if rx else None, "lon": rx.lon if rx else None})
        counts = per_area.setdefault(area, {s: 0 for s in CLUSTER_STATES})
        counts[state] += 1
    totals = {s: sum(c[s] for c in per_area.values()) for s in CLUSTER_STATES}
    return {
        "id": alert.id, "mode": alert.mode, "status": alert.status, "title": alert.title,
        "started_ms": alert.started_ms, "ends_ms": alert.ends_ms, "ended_ms": alert.ended_ms,
        "end_reason": alert.end_reason, "error_code": alert.error_code, "error_message_vi": alert.error_message_vi,
        "total": len(rx_ids), "counts": totals,
        "areas": [{"id": a, "name": area_names.get(a, a), "counts": c} for a, c in sorted(per_area.items())],
        "clusters": clusters,
    }


def alert_json(alert: Alert) -> dict[str, Any]:
    """The API's view of an alert (without the per-cluster status)."""
    return {
        "id": alert.id, "mode": alert.mode, "status": alert.status, "title": alert.title, "area": alert.area_id,
        "targets": json.loads(alert.targets), "scopes": json.loads(alert.scopes),
        "clusters": len(json.loads(alert.target_rx or "[]")), "content": alert.content_kind,
        "bulletin_id": alert.bulletin_id, "template_id": alert.template_id, "text": alert.text,
        "stream_url": alert.stream_url, "volume": alert.volume, "chime": alert.chime, "repeat": alert.repeat,
        "gap_s": alert.gap_s, "until_ms": alert.until_ms, "media_sha256": alert.media_sha256,
        "duration_ms": alert.duration_ms, "tts_engine": alert.tts_engine, "corrects": alert.corrects_id,
        "replaces": alert.replaces_id, "created_ms": alert.created_ms, "created_by": alert.created_by,
        "confirmed_by": alert.confirmed_by, "started_ms": alert.started_ms, "ends_ms": alert.ends_ms,
        "ended_ms": alert.ended_ms, "end_reason": alert.end_reason,
        "error": ({"code": alert.error_code, "message": alert.error_message, "message_vi": alert.error_message_vi}
                  if alert.error_code else None),
    }
