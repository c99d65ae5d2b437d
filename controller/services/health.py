"""Cluster health: heartbeat history in 15-minute buckets, status of each cluster, working share.

A receiver beats every 30 s. Keeping every beat of 10,000 receivers makes 200 million rows a
week, so :func:`record_heartbeat` folds each beat into its receiver's bucket (count, min, max,
sum of clock offset, temperature and signal; lowest free disk): at most 96 rows per receiver
per day. The latest beat itself stays on ``Receiver.last_hb``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from flask import current_app, has_app_context
from sqlalchemy import JSON, and_, case, cast, delete, exists, false, func, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller.db import rowcount
from controller.i18n import N_
from controller.models import AreaActivity, Fault, FaultAck, HeartbeatBucket, Receiver
from schedules.heartbeat import Heartbeat, HeartbeatError

BUCKET_MS = 15 * 60_000
STALE_MS = 90_000  # three missed heartbeats (the same rule as the web overview)
STATUSES = ("ok", "fault", "offline", "unknown")
STATUS_VI = {"ok": "Hoạt động tốt", "fault": "Có sự cố", "offline": "Mất kết nối", "unknown": "Không rõ"}
STATUS_COLOUR = {"ok": "#2b9348", "fault": "#f4a261", "offline": "#9aa0a6", "unknown": "#d0d4da"}

# Where the SQL sorts find a field in the stored heartbeat (schedules.heartbeat names each once).
OFFSET_PATH = ("clock_offset_ms",)
SIGNAL_PCT_PATH = ("network", "signal_pct")
RSSI_PATH = ("network", "rssi_dbm")
VOLUME_PATH = ("volume",)
VERSION_PATH = ("version",)
NETWORK_TYPES = {"cellular": "4G", "wifi": "Wi-Fi", "ethernet": "LAN"}


def signal_pct_from_dbm(dbm: float | None) -> float | None:
    """Signal quality in % from an RSSI in dBm (-113 dBm = 0 %, -51 dBm = 100 %, as 3GPP's CSQ scale)."""
    if dbm is None:
        return None
    return max(0.0, min(100.0, (dbm + 113) * 100 / 62))


def read_heartbeat(hb: Any) -> Heartbeat | None:
    """The heartbeat record of a parsed beat, or None when it is not one (fields of the wrong type read as absent)."""
    if not isinstance(hb, dict):
        return None
    try:
        return Heartbeat.decode(hb)
    except HeartbeatError:
        return None


def hb_fields(hb: dict[str, Any] | None) -> dict[str, Any]:
    """The fields the dashboard shows, from one heartbeat (missing ones are None)."""
    beat = read_heartbeat(hb)
    net = beat.network if beat is not None else None
    signal_dbm = net.rssi_dbm if net is not None else None
    pct = net.signal_pct if net is not None else None
    kind = net.type if net is not None else None
    return {
        "offset_ms": beat.clock_offset_ms if beat else None,
        "temperature_c": beat.temperature_c if beat else None,
        "signal_dbm": signal_dbm,
        "signal_pct": pct if pct is not None else signal_pct_from_dbm(signal_dbm),
        "network": NETWORK_TYPES.get(kind, kind) if kind else None,
        "network_tech": net.tech if net is not None else None,
        "volume": float(beat.volume) if beat and beat.volume is not None else None,
        "version": beat.version if beat else None,
        "uptime_s": beat.uptime_s if beat else None,
        "playing": beat.playing if beat else None,
        "cache_files": beat.cache_files if beat else None,
        "disk_free_bytes": beat.disk_free_bytes if beat else None,
    }


def _fold(row: HeartbeatBucket, prefix: str, value: float | None) -> None:
    if value is None:
        return
    setattr(row, f"{prefix}_n", (getattr(row, f"{prefix}_n") or 0) + 1)
    setattr(row, f"{prefix}_sum", (getattr(row, f"{prefix}_sum") or 0.0) + value)
    low, high = getattr(row, f"{prefix}_min"), getattr(row, f"{prefix}_max")
    setattr(row, f"{prefix}_min", value if low is None else min(low, value))
    setattr(row, f"{prefix}_max", value if high is None else max(high, value))


def record_heartbeat(db: Session, rx_id: str, hb: dict[str, Any], now: int) -> HeartbeatBucket:
    """Fold one heartbeat into its receiver's bucket (created on the first beat of the bucket)."""
    bucket = now - now % BUCKET_MS
    row = db.scalars(select(HeartbeatBucket).where(HeartbeatBucket.rx_id == rx_id,
                                                   HeartbeatBucket.bucket_ms == bucket)).first()
    if row is None:
        row = HeartbeatBucket(rx_id=rx_id, bucket_ms=bucket, beats=0, offset_n=0, offset_sum=0.0, temp_n=0,
                              temp_sum=0.0, signal_n=0, signal_sum=0.0, playing_beats=0)
        try:
            with db.begin_nested():
                db.add(row)
        except IntegrityError:  # another writer created it meanwhile
            row = db.scalars(select(HeartbeatBucket).where(HeartbeatBucket.rx_id == rx_id,
                                                           HeartbeatBucket.bucket_ms == bucket)).one()
        else:
            _count_working(db, rx_id, bucket)
    fields = hb_fields(hb)
    row.beats = (row.beats or 0) + 1
    _fold(row, "offset", fields["offset_ms"])
    _fold(row, "temp", fields["temperature_c"])
    _fold(row, "signal", fields["signal_dbm"])
    if fields["disk_free_bytes"] is not None:
        row.disk_free_min = min(row.disk_free_min or fields["disk_free_bytes"], fields["disk_free_bytes"])
    if fields["playing"]:
        row.playing_beats = (row.playing_beats or 0) + 1
    return row


def _count_working(db: Session, rx_id: str, bucket: int) -> None:
    """The receiver beat for the first time in ``bucket``: one more working receiver in its area."""
    rx = db.get(Receiver, rx_id)
    if rx is None:
        return
    activity = db.get(AreaActivity, (rx.area_id, bucket))
    if activity is None:
        db.add(AreaActivity(area_id=rx.area_id, bucket_ms=bucket, working=1))
    else:
        activity.working += 1


def prune_history(db: Session, keep_days: int, now: int) -> int:
    """Delete buckets older than ``keep_days``; returns how many went."""
    cutoff = now - keep_days * 86_400_000
    plain = {"synchronize_session": False}  # plain DELETEs, as on the tables: no object in the session is touched
    db.execute(delete(AreaActivity).where(AreaActivity.bucket_ms < cutoff).execution_options(**plain))
    result = db.execute(delete(HeartbeatBucket).where(HeartbeatBucket.bucket_ms < cutoff).execution_options(**plain))
    return rowcount(result)


def history(db: Session, rx_id: str, since_ms: int, until_ms: int) -> list[dict[str, Any]]:
    """One receiver's buckets in ``[since, until)``, oldest first, with averages."""
    rows = db.scalars(select(HeartbeatBucket).where(
        HeartbeatBucket.rx_id == rx_id, HeartbeatBucket.bucket_ms >= since_ms,
        HeartbeatBucket.bucket_ms < until_ms).order_by(HeartbeatBucket.bucket_ms)).all()
    out = []
    for r in rows:
        out.append({
            "bucket_ms": r.bucket_ms, "beats": r.beats,
            "offset_avg": r.offset_sum / r.offset_n if r.offset_n else None,
            "offset_min": r.offset_min, "offset_max": r.offset_max,
            "temp_avg": r.temp_sum / r.temp_n if r.temp_n else None, "temp_min": r.temp_min, "temp_max": r.temp_max,
            "signal_avg": r.signal_sum / r.signal_n if r.signal_n else None,
            "signal_min": r.signal_min, "signal_max": r.signal_max,
            "disk_free_min": r.disk_free_min, "playing_beats": r.playing_beats,
        })
    return out


# ----------------------------------------------------------------- status


def in_fleet(visible: set[str]):
    """SQL: the receiver is in one of the ``visible`` areas and in service (not retired)."""
    return and_(Receiver.area_id.in_(visible), Receiver.retired_ms.is_(None))


def online_clause(now: int):
    """SQL: the receiver is online and was heard from within three heartbeats."""
    return and_(Receiver.online.is_(True), Receiver.last_seen_ms >= now - STALE_MS)


def open_fault_clause():
    """SQL: the receiver has a fault that is not cleared."""
    return exists().where(Fault.rx_id == Receiver.id, Fault.cleared_ms.is_(None))


def status_of(online: bool, faulty: bool, lost: int | None = None) -> str:
    """ok, fault (online with an open fault) or offline; ``unknown`` while the broker is lost (``lost``)."""
    if lost is not None:
        return "unknown"
    if not online:
        return "offline"
    return "fault" if faulty else "ok"


def broker_lost_since() -> int | None:
    """Since when the controller has not been connected to the broker (ms), or None.

    From then on it cannot hear any receiver, so whatever the database says about their
    state is only the last known one: every status view shows ``unknown`` since this time.
    None when connected, and when this process runs no MQTT services (a CLI, a unit test).
    """
    svc = current_app.extensions.get("loaxa.services") if has_app_context() else None
    return svc.broker_down_since() if svc is not None else None


@dataclass
class ClusterPage:
    """One page of the cluster table."""

    rows: list[dict[str, Any]]
    total: int
    page: int
    pages: int
    per_page: int


SORTS = ("name", "status", "last_seen", "offset", "signal", "version", "volume", "area")


def clusters(db: Session, visible: set[str], now: int, *, status: str | None = None, q: str | None = None,
             sort: str = "name", desc: bool = False, page: int = 1, per_page: int = 50) -> ClusterPage:
    """The filtered, sorted, paginated cluster table of the receivers in ``visible`` areas."""
    online = online_clause(now)
    faulty = open_fault_clause()
    lost = broker_lost_since()
    query = select(Receiver.id, Receiver.name, Receiver.area_id, Receiver.last_seen_ms, Receiver.lat,
                   Receiver.lon, online.label("on"), faulty.label("faulty"),
                   Receiver.last_hb).where(in_fleet(visible))
    if lost is not None and status is not None:  # nothing is known to be ok, faulty or offline
        query = query.where(false()) if status != "unknown" else query
    elif status == "unknown":
        query = query.where(false())
    elif status == "offline":
        query = query.where(~online)
    elif status == "fault":
        query = query.where(online, faulty)
    elif status == "ok":
        query = query.where(online, ~faulty)
    if q:
        like = f"%{q.strip().lower()}%"
        query = query.where(func.lower(Receiver.name).like(like) | func.lower(Receiver.id).like(like))
    per_page = max(1, min(per_page, 500))
    sort = sort if sort in SORTS else "name"
    total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    pages = max(1, -(-total // per_page))
    page = max(1, min(page, pages))
    col = _sort_column(db, sort, online, faulty)
    # Receivers without the value (no heartbeat yet) go last whichever the direction.
    query = query.order_by(col.is_(None), col.desc() if desc else col, Receiver.id)
    raw = db.execute(query.limit(per_page).offset((page - 1) * per_page)).all()
    rows = [_row(r, lost) for r in raw]
    return ClusterPage(rows, total, page, pages, per_page)


def _hb_value(db: Session, path: tuple[str, ...], as_text: bool = False):
    """SQL: the value at ``path`` in the latest heartbeat (JSON kept as text)."""
    pg = db.get_bind().dialect.name == "postgresql"
    doc = cast(Receiver.last_hb, JSONB) if pg else type_coerce(Receiver.last_hb, JSON)
    key = path[0] if len(path) == 1 else path
    return doc[key].as_string() if as_text else doc[key].as_float()


def _sort_column(db: Session, sort: str, online, faulty):
    if sort == "name":
        return Receiver.name
    if sort == "last_seen":
        return Receiver.last_seen_ms
    if sort == "area":
        return Receiver.area_id
    if sort == "status":
        return case((~online, 2), (faulty, 1), else_=0)
    if sort == "offset":
        return func.abs(_hb_value(db, OFFSET_PATH))
    if sort == "signal":  # by quality in %: what ModemManager gives, else from the RSSI as in hb_fields
        return func.coalesce(_hb_value(db, SIGNAL_PCT_PATH), (_hb_value(db, RSSI_PATH) + 113) * 100 / 62)
    if sort == "volume":
        return _hb_value(db, VOLUME_PATH)
    return _hb_value(db, VERSION_PATH, as_text=True)


def _row(r, lost: int | None = None) -> dict[str, Any]:
    try:
        hb = json.loads(r.last_hb) if r.last_hb else None
    except ValueError:
        hb = None
    fields = hb_fields(hb if isinstance(hb, dict) else None)
    return {"id": r.id, "name": r.name, "area_id": r.area_id, "last_seen_ms": r.last_seen_ms,
            "lat": r.lat, "lon": r.lon, "status": status_of(bool(r.on), bool(r.faulty), lost),
            "unknown_since_ms": lost,
            "offset": fields["offset_ms"], "abs_offset": abs(fields["offset_ms"]) if fields["offset_ms"] is not None
            else None, "signal": fields["signal_dbm"], "signal_pct": fields["signal_pct"],
            "network": fields["network"], "network_tech": fields["network_tech"],
            "version": fields["version"], "volume": fields["volume"],
            "temperature": fields["temperature_c"], "playing": fields["playing"]}


def summary(db: Session, visible: set[str], now: int) -> dict[str, int | None]:
    """How many clusters in ``visible`` are ok, faulty, offline, and in all (``unknown_since_ms``: None or
    when the broker was lost)."""
    online = online_clause(now)
    faulty = open_fault_clause()
    total = db.scalar(select(func.count()).select_from(Receiver).where(in_fleet(visible))) or 0
    ok = db.scalar(select(func.count()).select_from(Receiver).where(in_fleet(visible), online,
                                                                   ~faulty)) or 0
    fault = db.scalar(select(func.count()).select_from(Receiver).where(in_fleet(visible), online,
                                                                      faulty)) or 0
    lost = broker_lost_since()
    if lost is not None:
        return {"total": total, "ok": 0, "fault": 0, "offline": 0, "unknown": total, "unknown_since_ms": lost}
    return {"total": total, "ok": ok, "fault": fault, "offline": total - ok - fault, "unknown": 0,
            "unknown_since_ms": None}


def per_area(db: Session, visible: set[str], now: int) -> dict[str, dict[str, int]]:
    """Status counts per area id (the receiver's own area)."""
    online = online_clause(now)
    faulty = open_fault_clause()
    lost = broker_lost_since()
    out: dict[str, dict[str, int]] = {}
    for area_id, on, bad, n in db.execute(
            select(Receiver.area_id, online, faulty, func.count()).where(in_fleet(visible))
            .group_by(Receiver.area_id, online, faulty)):
        counts = out.setdefault(area_id, {"total": 0, "ok": 0, "fault": 0, "offline": 0, "unknown": 0})
        counts[status_of(bool(on), bool(bad), lost)] += n
        counts["total"] += n
    return out


def map_points(db: Session, visible: set[str], now: int) -> list[dict[str, Any]]:
    """Receivers with coordinates: id, name, lat, lon, status."""
    online = online_clause(now)
    faulty = open_fault_clause()
    rows = db.execute(select(Receiver.id, Receiver.name, Receiver.lat, Receiver.lon, online, faulty)
                      .where(in_fleet(visible), Receiver.lat.is_not(None),
                             Receiver.lon.is_not(None))).all()
    lost = broker_lost_since()
    return [{"id": r[0], "name": r[1], "lat": r[2], "lon": r[3], "status": status_of(bool(r[4]), bool(r[5]), lost)}
            for r in rows]


def working_share(db: Session, visible: set[str], since_ms: int, until_ms: int,
                  step_ms: int = 3600_000) -> list[tuple[int, float]]:
    """Share of the clusters in ``visible`` that sent heartbeats, per ``step_ms``, oldest first.

    Each 15-minute bucket counts the receivers that beat in it (:class:`AreaActivity`, kept per
    area as beats arrive, so this never scans the heartbeat history); a step is the mean of its
    buckets over today's number of receivers.
    """
    total = db.scalar(select(func.count()).select_from(Receiver).where(in_fleet(visible))) or 0
    if total == 0:
        return []
    rows = db.execute(select(AreaActivity.bucket_ms, func.sum(AreaActivity.working))
                      .where(AreaActivity.area_id.in_(visible), AreaActivity.bucket_ms >= since_ms,
                             AreaActivity.bucket_ms < until_ms).group_by(AreaActivity.bucket_ms)).all()
    per_step: dict[int, float] = {}
    for bucket, working in rows:
        i = (bucket - since_ms) // step_ms
        per_step[i] = per_step.get(i, 0.0) + (working or 0)
    steps = max(1, -(-(until_ms - since_ms) // step_ms))
    buckets_per_step = max(1, step_ms // BUCKET_MS)
    out = []
    for i in range(steps):
        start = since_ms + i * step_ms
        # The step still under way counts only the buckets that have begun.
        span = min(buckets_per_step, max(1, -(-(until_ms - start) // BUCKET_MS)))
        out.append((start, min(1.0, per_step.get(i, 0.0) / span / total)))
    return out


# ----------------------------------------------------------------- faults


# Every fault a receiver raises (receiver/agent.py, receiver/hardware.py), in Vietnamese; pages
# translate the label where they show it, the API gives it as ``label_vi``.
FAULT_VI = {
    "amplifier_fault": N_("Hỏng bộ khuếch đại"), "mains_power_lost": N_("Mất điện lưới"),
    "speaker_line_open": N_("Hở đường dây loa"), "clock_unsynchronised": N_("Lệch đồng hồ"),
    "signature_refused": N_("Từ chối chữ ký"), "conf_refused": N_("Từ chối cấu hình"),
    "download_failed": N_("Không tải được bản tin"), "media_unreachable": N_("Không tải được bản tin"),
    "checksum_mismatch": N_("Bản tin tải về bị sai lệch"), "disk_full": N_("Đầy bộ nhớ"),
    "disk_nearly_full": N_("Bộ nhớ sắp đầy"), "no_audio_device": N_("Không có thiết bị âm thanh"),
    "overheating": N_("Quá nhiệt"), "player_crashed": N_("Trình phát bị lỗi"),
    "stream_unavailable": N_("Không thu được luồng phát trực tiếp"),
    "protocol_violation": N_("Cụm thu gửi dữ liệu sai giao thức"),
    "manifest_missing": N_("Cụm thu thiếu lịch phát của địa bàn"), "unknown": N_("Không rõ (cụm thu gửi mã lạ)"),
}


def fault_state(fault: Fault, ack: FaultAck | None) -> str:
    """open, acked or resolved."""
    if fault.cleared_ms is not None:
        return "resolved"
    return "acked" if ack is not None else "open"


def fault_stats(db: Session, visible: set[str], since_ms: int) -> dict[str, Any]:
    """Open / acknowledged counts and the mean time to repair of faults cleared since ``since_ms``."""
    in_area = select(Receiver.id).where(in_fleet(visible))
    open_total = db.scalar(select(func.count()).select_from(Fault).where(
        Fault.rx_id.in_(in_area), Fault.cleared_ms.is_(None))) or 0
    acked = db.scalar(select(func.count()).select_from(Fault).join(FaultAck, FaultAck.fault_id == Fault.id)
                      .where(Fault.rx_id.in_(in_area), Fault.cleared_ms.is_(None))) or 0
    repaired, mean = db.execute(select(func.count(), func.avg(Fault.cleared_ms - Fault.raised_ms)).where(
        Fault.rx_id.in_(in_area), Fault.cleared_ms.is_not(None), Fault.cleared_ms >= since_ms)).one()
    return {"open": open_total - acked, "acked": acked, "resolved": repaired or 0,
            "mttr_ms": int(mean) if mean is not None else None}


def duration_vi(ms: int | None) -> str:
    """A duration in words, in the page's language: '2 ngày 3 giờ', '15 phút', '40 giây'."""
    from flask_babel import gettext as _  # pages only; the rest of this module runs without a request

    if ms is None:
        return "—"
    s = max(0, int(ms // 1000))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return _("%(d)d ngày %(h)d giờ", d=days, h=hours)
    if hours:
        return _("%(h)d giờ %(m)d phút", h=hours, m=minutes)
    if minutes:
        return _("%(m)d phút", m=minutes)
    return _("%(s)d giây", s=seconds)
