"""Receiver provisioning: the config file a receiver box runs with."""

from __future__ import annotations

import json
from pathlib import Path


def write_receiver_config(path: Path, *, rx_id: str, mqtt_url: str, public_key: str, media_base_url: str,
                          token: str, state_dir: str | Path, sink: str) -> Path:
    """Write a receiver's TOML config (mode 0600: it holds the receiver's token)."""
    values = {"rx_id": rx_id, "mqtt_url": mqtt_url, "controller_public_key": public_key,
              "media_base_url": media_base_url, "token": token, "state_dir": str(state_dir), "sink": sink}
    # JSON string escapes are valid TOML basic strings.
    text = "".join(f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in values.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")
    return path
