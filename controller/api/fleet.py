"""The receiver fleet: provision a box, issue its bundle, edit or move it, retire it (area managers)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit, urlunsplit

from flask import Response, current_app, jsonify

from controller import auth
from controller import keys as keys_mod
from controller.api import bp, check_area, json_body, receiver_in_scope, require
from controller.db import get_db
from controller.errors import ApiError
from controller.models import Receiver
from controller.runtime import services
from controller.services import provisioning
from controller.services.programme import audit
from controller.services.receivers import receiver_json
from schedules import topics
from schedules.events import now_ms

logger = logging.getLogger(__name__)
SINKS = ("alsa", "file", "null")


def _coordinates(data: dict, rx: Receiver) -> None:
    for key, low, high in (("lat", -90.0, 90.0), ("lon", -180.0, 180.0)):
        if key not in data:
            continue
        value = data[key]
        if value is None or value == "":
            setattr(rx, key, None)
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if not low <= number <= high:
            raise ApiError(400, f"receiver.bad_{key}", f"{key} must be a number from {low:g} to {high:g}",
                           "Vĩ độ phải từ -90 đến 90." if key == "lat" else "Kinh độ phải từ -180 đến 180.")
        setattr(rx, key, number)


def _name(data: dict, default: str) -> str:
    name = str(data.get("name") or default).strip()
    if not name or len(name) > 200:
        raise ApiError(400, "receiver.bad_name", "name: 1-200 characters", "Tên cụm loa cần 1-200 ký tự.")
    return name


def _republish(rx_id: str) -> None:
    svc = services()
    if svc is not None:
        svc.dispatcher.publish_receiver(rx_id)


@bp.post("/receivers")
@require("manager")
def create_receiver(principal):
    """Register a receiver box in an area the caller manages: ``{id, area, name?, lat?, lon?}``.

    It gets its credentials when its bundle is downloaded (``POST /receivers/ID/bundle``).
    """
    data = json_body(optional=True)
    db = get_db()
    rx_id = str(data.get("id", "")).strip()
    if not provisioning.RX_ID.match(rx_id):
        raise ApiError(400, "receiver.bad_id", "id: 2-63 lower-case letters, digits or dashes (e.g. qp-thon-3)",
                       "Mã cụm loa 2-63 ký tự: chữ thường không dấu, số, gạch ngang (ví dụ qp-thon-3).")
    area = check_area(principal, str(data.get("area", "")))
    if db.get(Receiver, rx_id) is not None:
        raise ApiError(409, "receiver.exists", f"receiver {rx_id!r} exists", "Mã cụm loa đã tồn tại.")
    rx = Receiver(id=rx_id, area_id=area.id, name=_name(data, rx_id),
                  token_hash=auth.token_hash(auth.new_token()), created_ms=now_ms())
    _coordinates(data, rx)
    db.add(rx)
    audit(db, principal.id, "create_receiver", "receiver", rx_id,
          {"area": rx.area_id, "name": rx.name, "lat": rx.lat, "lon": rx.lon})
    db.commit()
    _republish(rx_id)
    return jsonify({"receiver": receiver_json(rx)}), 201


@bp.patch("/receivers/<rx_id>")
@require("manager")
def update_receiver(principal, rx_id: str):
    """Rename, place on the map (lat, lon) or move to another area the caller manages."""
    data = json_body(optional=True)
    db = get_db()
    rx = receiver_in_scope(principal, rx_id)
    if "name" in data:
        rx.name = _name(data, "")
    _coordinates(data, rx)
    moved = "area" in data and data["area"] != rx.area_id
    if moved:
        rx.area_id = check_area(principal, str(data["area"])).id
    audit(db, principal.id, "update_receiver", "receiver", rx.id,
          {k: getattr(rx, {"area": "area_id"}.get(k, k)) for k in ("name", "lat", "lon", "area") if k in data})
    db.commit()
    if moved:
        _republish(rx.id)
        svc = services()
        if svc is not None:
            svc.programme_changed()  # exclusions and missed-play accounting follow the receiver
    return jsonify({"receiver": receiver_json(rx)})


def receiver_broker_url() -> str:
    """The broker URL written into bundles: RECEIVER_MQTT_URL, else the controller's own, without its login."""
    url = current_app.config.get("RECEIVER_MQTT_URL")
    if not url:
        svc = services()
        url = (svc.mqtt_url if svc is not None else None) or current_app.config.get("MQTT_URL") or ""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@bp.post("/receivers/<rx_id>/bundle")
@require("manager")
def receiver_bundle(principal, rx_id: str):
    """Issue new credentials and download the box's provisioning bundle (.tar.gz for install-receiver.sh).

    Body (optional): ``{"sink": "alsa"|"file"|"null"}``. The box's previous token and broker
    password stop working: a bundle is a re-install.
    """
    data = json_body(optional=True)
    db = get_db()
    rx = receiver_in_scope(principal, rx_id)
    if rx.retired_ms is not None:
        raise ApiError(409, "receiver.retired", "the receiver is retired; register the box under a new id",
                       "Cụm loa đã ngừng sử dụng; hãy đăng ký hộp thu với mã mới.")
    sink = str(data.get("sink", "alsa"))
    if sink not in SINKS:
        raise ApiError(400, "receiver.bad_sink", f"sink must be one of {', '.join(SINKS)}",
                       "Đầu ra âm thanh không hợp lệ.")
    mqtt_url = receiver_broker_url()
    if not mqtt_url:
        raise ApiError(503, "mqtt.unavailable", "no broker URL is known; set RECEIVER_MQTT_URL",
                       "Chưa có địa chỉ máy chủ MQTT cho hộp thu.")
    svc = services()
    key = svc.key if svc is not None else keys_mod.load_or_create(current_app.config["SIGNING_KEY_FILE"])
    audit(db, principal.id, "issue_bundle", "receiver", rx.id, {"sink": sink})
    token, password = provisioning.issue_credentials(current_app, db, rx)
    ca = current_app.config.get("RECEIVER_CA_FILE")
    archive = provisioning.bundle_archive(
        rx.id, mqtt_url=mqtt_url, public_key=keys_mod.public_text(key), media_base_url=current_app.config["PUBLIC_URL"],
        token=token, mqtt_password=password, state_dir="/var/lib/loaxa-receiver", sink=sink,
        ca_file=ca if ca and mqtt_url.startswith("mqtts://") else None)
    logger.info("user=%s issued a provisioning bundle for rx=%s", principal.username, rx.id)
    return Response(archive, mimetype="application/gzip", headers={
        "Content-Disposition": f'attachment; filename="loaxa-{rx.id}.tar.gz"', "Cache-Control": "no-store"})


@bp.post("/receivers/<rx_id>/retire")
@require("manager")
def retire_receiver(principal, rx_id: str):
    """Take a box out of service: its token and broker login are revoked, its plays stay in the reports."""
    db = get_db()
    rx = receiver_in_scope(principal, rx_id)
    if rx.retired_ms is not None:
        raise ApiError(409, "receiver.retired", "the receiver is already retired", "Cụm loa đã ngừng sử dụng.")
    audit(db, principal.id, "retire_receiver", "receiver", rx.id, {})
    provisioning.retire(current_app, db, rx)
    svc = services()
    if svc is not None:
        svc.publish(topics.conf(rx.id), b"", True)  # clear its retained conf from the broker
        svc.programme_changed()
    logger.info("user=%s retired rx=%s", principal.username, rx.id)
    return jsonify({"receiver": receiver_json(rx)})

