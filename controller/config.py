"""Controller configuration: defaults, then a TOML file named by LOAXA_CONFIG,
then ``LOAXA_*`` environment variables, then the test config.

Every default suits one machine, so ``make run`` needs none.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, Any] = {
    "VAR_DIR": "var",
    "DATABASE_URL": None,  # default: sqlite:///<VAR_DIR>/loaxa.db
    "MEDIA_DIR": None,  # default: <VAR_DIR>/media
    "SIGNING_KEY_FILE": None,  # default: <VAR_DIR>/keys/signing.pem
    "MQTT_URL": None,  # default: an embedded broker on a free port
    "MQTT_CLIENT_ID": "loaxa-controller",
    "RECEIVER_MQTT_URL": None,  # broker URL written into provisioning bundles; default: the controller's own
    "RECEIVER_CA_FILE": None,  # the broker's CA certificate, copied into bundles for mqtts:// URLs
    "MQTT_PASSWORD_FILE": None,  # Mosquitto password file the controller keeps: one login per receiver
    "MQTT_RELOAD_COMMAND": None,  # run after that file changes, e.g. "systemctl reload mosquitto"
    "HTTP_HOST": "127.0.0.1",
    "HTTP_PORT": 8080,
    "PUBLIC_URL": None,  # base URL receivers download media from
    "MAX_UPLOAD_BYTES": 200 * 1024 * 1024,
    "MAX_DURATION_S": 3 * 3600,
    "AUDIO_BITRATE": "48k",
    "AUDIO_WORKERS": 2,
    "AUDIO_FORMAT": "mp3",  # distribution format: mp3 or opus
    "AUDIO_SAMPLE_RATE": 44100,
    "AUDIO_TARGET_LUFS": -16.0,  # EBU R128 integrated loudness of every output
    "AUDIO_TRUE_PEAK_DB": -1.5,
    "AUDIO_HIGHPASS_HZ": 120,  # speech band for horn speakers; 0 disables
    "AUDIO_LOWPASS_HZ": 8000,  # horns reproduce little above this; 0 disables
    "AUDIO_TRIM_SILENCE": True,  # trim leading and trailing silence
    "AUDIO_CORRECT_UP_TO_S": 600,  # outputs up to this long are re-measured and re-encoded when off target
    "TTS_ENGINES": "gtts,espeak",  # order tried; piper goes first when TTS_PIPER_MODEL is set
    "TTS_GTTS_URL": None,  # default: Google's endpoint
    "TTS_GTTS_TIMEOUT_S": 5,
    "TTS_ESPEAK_VOICE": "vi",  # vi (northern), vi-vn-x-central, vi-vn-x-south
    "TTS_ESPEAK_RATE": 140,
    "TTS_ESPEAK_WORD_GAP": 3,  # extra pause between words, 10 ms units
    "TTS_PIPER_MODEL": None,  # path of a Piper .onnx voice
    "TTS_PIPER_COMMAND": "piper",
    "TTS_ABBREVIATIONS": {},  # operator additions, e.g. {"QP" = "Quảng Phú"} in the TOML file
    "TTS_MAX_CHARS": 20000,
    "TIMEZONE": "Asia/Ho_Chi_Minh",
    "START_SERVICES": True,  # MQTT link, telemetry and scheduler; off for pure unit tests
    "MANIFEST_REFRESH_S": 600,
    "REBUILD_DEBOUNCE_S": 1.0,  # a programme change is published this long after the last edit
    "MISSED_CHECK_S": 300,
    "RETAINED_AUDIT_DELAY_S": 10,  # after a connect, the broker's retained copies have arrived by then
    "ALERT_TICK_S": 2,  # how often running alerts are checked for their end (and queued ones started)
    "ALERT_ALLOW_PRIVATE_STREAMS": False,  # relay streams from private or loopback addresses (a LAN studio)
    "LIVE_ICECAST": "auto",  # live voice: "auto" starts Debian's icecast2 on loopback when installed, "off" does not
    "ICECAST_URL": None,  # an Icecast of the district's (http://host:8000): live voice goes there instead
    "ICECAST_SOURCE_PASSWORD": None,
    "ICECAST_PUBLIC_URL": None,  # where receivers reach that Icecast (default: ICECAST_URL, or the loopback one)
    "LIVE_IDLE_S": 10,  # a live-voice session that sent no audio this long is ended (the phone went away)
    "FLEET_WATCH_S": 5,  # how often to look for receivers registered by another process (the CLI)
    "HEARTBEAT_HISTORY_DAYS": 35,  # 15-minute buckets kept this long (a month of charts and reports)
    "LOGIN_MAX_FAILURES": 5,  # wrong passwords from one address for one account before it waits (see auth.py)
    "LOGIN_LOCK_S": 900,  # the longest such wait; it doubles from 1 s with each further failure
    "LOGIN_MAX_FAILURES_PER_ADDRESS": 30,  # the same across all accounts tried from one address
    "LOGIN_FORGET_S": 86400,  # failures older than this are forgotten
    "LOGIN_MAX_CONCURRENT_VERIFY": 4,  # argon2 verifications at a time in one process
    "LOGIN_VERIFY_WAIT_S": 1.0,  # how long a login waits for a free slot before answering 503
    "PROXY_HOPS": 0,  # reverse proxies in front (nginx: 1): the client address is taken from X-Forwarded-For
    "MAX_JSON_BYTES": 64 * 1024,  # API bodies other than uploads (which have MAX_UPLOAD_BYTES)
    "MAX_JSON_DEPTH": 32,  # nesting of JSON arrays and objects
    "SESSION_IDLE_S": 1800,  # a browser session ends after this long without a request
    "MISSED_GRACE_S": 120,  # a play counts as missed when no start was reported this long after its end
    "MANIFEST_GRACE_S": 60,  # a receiver online this long without a followed scope's manifest is at fault
    "MAP_TILE_URL": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",  # "" = the SVG coordinate plot only
}


class ConfigError(Exception):
    """The configuration cannot be used; the message says which setting and why."""


def finalize(config: dict[str, Any]) -> None:
    """Fill the derived defaults and check the values, in place."""
    var = Path(config["VAR_DIR"]).resolve()
    config["VAR_DIR"] = str(var)
    config["DATABASE_URL"] = config.get("DATABASE_URL") or f"sqlite:///{var / 'loaxa.db'}"
    config["MEDIA_DIR"] = str(Path(config.get("MEDIA_DIR") or var / "media").resolve())
    config["SIGNING_KEY_FILE"] = str(Path(config.get("SIGNING_KEY_FILE") or var / "keys" / "signing.pem"))
    if not config.get("PUBLIC_URL"):
        config["PUBLIC_URL"] = f"http://{config['HTTP_HOST']}:{config['HTTP_PORT']}"
    config["MAX_CONTENT_LENGTH"] = int(config["MAX_UPLOAD_BYTES"]) + 1024 * 1024
    errors = []
    for key in ("HTTP_PORT", "MAX_UPLOAD_BYTES", "MAX_DURATION_S", "AUDIO_WORKERS", "MANIFEST_REFRESH_S"):
        try:
            if int(config[key]) <= 0:
                errors.append(f"{key} must be positive")
        except (TypeError, ValueError):
            errors.append(f"{key} must be an integer, not {config[key]!r}")
    url = config.get("MQTT_URL")
    if url and not str(url).startswith(("mqtt://", "mqtts://")):
        errors.append("MQTT_URL must start with mqtt:// or mqtts://")
    if errors:
        raise ConfigError("; ".join(errors))
    if not config.get("SECRET_KEY"):
        config["SECRET_KEY"] = _persistent_secret(var / "secret_key")


def load_file(path: str) -> dict[str, Any]:
    """Read the optional TOML file; keys are upper-cased to match Flask's config."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"LOAXA_CONFIG={path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"LOAXA_CONFIG={path}: {exc}") from exc
    return {k.upper(): v for k, v in data.items()}


def redacted(config: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to log: secrets and passwords in URLs hidden."""
    out = {}
    for key in DEFAULTS:
        value = config.get(key)
        if isinstance(value, str) and "://" in value and "@" in value:
            scheme, rest = value.split("://", 1)
            value = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        out[key] = value
    return out


def _persistent_secret(path: Path) -> str:
    """A session secret generated once and kept under var/ so logins survive restarts."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value
