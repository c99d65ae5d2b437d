"""Receiver provisioning: the config file a receiver box runs with, or a whole bundle for the installer.

A bundle (``loaxa-controller provision RX --bundle DIR``, or the .tar.gz the
Administration page downloads) is what ``deploy/install-receiver.sh`` takes::

    DIR/receiver.toml      config (mode 0600): ids, broker URL, MQTT login, token, key, CA path
    DIR/controller.pub     the controller's Ed25519 public key (base64), also inside the config
    DIR/mosquitto-passwd   "<rx>:$7$..." the login as a line of Mosquitto's password file: hashed,
                           so a broker without MQTT_PASSWORD_FILE gets it by appending the line
    DIR/ca.crt             the broker's CA when --ca-file was given (the config names it)

The broker password is in the bundle once, in plain text, in ``receiver.toml`` (0600): the one
place the agent reads it. No other file, listing or message carries it.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import shutil
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from flask import Flask
from sqlalchemy.orm import Session

from controller import auth
from controller.models import Receiver
from controller.services.brokerauth import PasswordFile, hash_password, reload_broker
from schedules.events import now_ms

# A receiver id is its MQTT username (and client id) and part of its topics: no '/', '+', '#' or spaces,
# and never the controller's login, which the ACL lets publish commands.
RX_ID = re.compile(r"^(?!loaxa-controller$)[a-z0-9][a-z0-9-]{1,62}$")
PASSWD_LINE = "mosquitto-passwd"
"""The bundle's file holding the receiver's login as one hashed line of Mosquitto's password file."""


def _write_private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")
    return path


def write_receiver_config(path: Path, *, rx_id: str, mqtt_url: str, public_key: str, media_base_url: str,
                          token: str, state_dir: str | Path, sink: str, extra: dict[str, str] | None = None) -> Path:
    """Write a receiver's TOML config (mode 0600: it holds the receiver's token)."""
    values = {"rx_id": rx_id, "mqtt_url": mqtt_url, "controller_public_key": public_key,
              "media_base_url": media_base_url, "token": token, "state_dir": str(state_dir), "sink": sink,
              **(extra or {})}
    # JSON string escapes are valid TOML basic strings.
    text = "".join(f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in values.items())
    return _write_private(path, text)


def write_bundle(directory: Path, *, rx_id: str, mqtt_url: str, public_key: str, media_base_url: str, token: str,
                 mqtt_password: str, state_dir: str | Path, sink: str, ca_file: Path | None = None) -> list[str]:
    """Write a provisioning bundle (see the module docstring); returns the file names written."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    password = mqtt_password
    extra = {"mqtt_username": rx_id, "mqtt_password": password}
    written = ["receiver.toml", "controller.pub", PASSWD_LINE]
    if ca_file is not None:
        shutil.copyfile(ca_file, directory / "ca.crt")
        extra["mqtt_ca_file"] = "ca.crt"
        written.append("ca.crt")
    write_receiver_config(directory / "receiver.toml", rx_id=rx_id, mqtt_url=mqtt_url, public_key=public_key,
                          media_base_url=media_base_url, token=token, state_dir=state_dir, sink=sink, extra=extra)
    (directory / "controller.pub").write_text(public_key + "\n", encoding="utf-8")
    _write_private(directory / PASSWD_LINE, f"{rx_id}:{hash_password(password)}\n")
    return written


def issue_credentials(app: Flask, db: Session, rx: Receiver) -> tuple[str, str]:
    """New media token and broker password for ``rx`` (the old ones stop working); returns both.

    The token's hash is committed first; the broker's password file (when the controller keeps
    one) is written and reloaded after, so a failed commit never locks out a working box.
    """
    controller_login = urlsplit(app.config.get("MQTT_URL") or "").username
    if controller_login and unquote(controller_login) == rx.id:
        raise ValueError(f"receiver id {rx.id!r} is the controller's broker login")
    token, password = auth.new_token(), secrets.token_urlsafe(24)
    rx.token_hash = auth.token_hash(token)
    db.commit()
    if app.config.get("MQTT_PASSWORD_FILE"):
        PasswordFile(app.config["MQTT_PASSWORD_FILE"]).set(rx.id, password)
        reload_broker(app.config.get("MQTT_RELOAD_COMMAND"))
    return token, password


def retire(app: Flask, db: Session, rx: Receiver) -> None:
    """Take ``rx`` out of service: token and broker login revoked, history kept."""
    rx.retired_ms = now_ms()
    rx.online = False
    rx.token_hash = auth.token_hash(auth.new_token())  # nobody knows this token
    db.commit()
    if app.config.get("MQTT_PASSWORD_FILE") and PasswordFile(app.config["MQTT_PASSWORD_FILE"]).remove(rx.id):
        reload_broker(app.config.get("MQTT_RELOAD_COMMAND"))


def bundle_archive(rx_id: str, **bundle_args) -> bytes:
    """The bundle as a .tar.gz holding one directory ``loaxa-<rx_id>/`` (``bundle_args``: see write_bundle)."""
    with tempfile.TemporaryDirectory(prefix="loaxa-bundle-") as tmp:
        root = Path(tmp) / f"loaxa-{rx_id}"
        write_bundle(root, rx_id=rx_id, **bundle_args)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(root, arcname=root.name)
        return buf.getvalue()
