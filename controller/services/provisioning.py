"""Receiver provisioning: the config file a receiver box runs with, or a whole bundle for the installer.

A bundle (``loaxa-controller provision RX --bundle DIR``) is what
``deploy/install-receiver.sh`` takes::

    DIR/receiver.toml      config (mode 0600): ids, broker URL, MQTT login, token, key, CA path
    DIR/controller.pub     the controller's Ed25519 public key (base64), also inside the config
    DIR/mqtt-credentials   "<rx>:<password>" for the broker's password file (mosquitto_passwd -b)
    DIR/ca.crt             the broker's CA when --ca-file was given (the config names it)
"""

from __future__ import annotations

import json
import secrets
import shutil
from pathlib import Path


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
                 state_dir: str | Path, sink: str, ca_file: Path | None = None) -> list[str]:
    """Write a provisioning bundle (see the module docstring); returns the file names written."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    password = secrets.token_urlsafe(24)
    extra = {"mqtt_username": rx_id, "mqtt_password": password}
    written = ["receiver.toml", "controller.pub", "mqtt-credentials"]
    if ca_file is not None:
        shutil.copyfile(ca_file, directory / "ca.crt")
        extra["mqtt_ca_file"] = "ca.crt"
        written.append("ca.crt")
    write_receiver_config(directory / "receiver.toml", rx_id=rx_id, mqtt_url=mqtt_url, public_key=public_key,
                          media_base_url=media_base_url, token=token, state_dir=state_dir, sink=sink, extra=extra)
    (directory / "controller.pub").write_text(public_key + "\n", encoding="utf-8")
    _write_private(directory / "mqtt-credentials", f"{rx_id}:{password}\n")
    return written
