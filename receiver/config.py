"""Receiver configuration: one TOML file per box, validated at start-up.

Example (every key at the top level)::

    rx_id = "quang-phu-07"
    mqtt_url = "mqtts://rx-quang-phu-07:secret@broker.example.vn:8883"
    controller_public_key = "q4ZrY...="   # schedules.signing.public_key_to_text
    media_base_url = "https://media.example.vn"
    token = "..."                        # bearer token for media downloads
    state_dir = "/var/lib/loaxa-receiver"
    sink = "file"                        # "alsa" (a Pi), "file" or "null" (the default)
    alsa_device = "default"              # aplay -D device for the alsa sink
    preroll_ms = 3000                    # decoder started, output opened this long before t0
    cache_max_mb = 2048                  # media cache bound (least recently used out, scheduled media never)
    disk_reserve_mb = 100                # never download into the last 100 MB of the disk
    ntp_server = "pool.ntp.org"          # clock offset by SNTP when chrony is absent (optional)
    amp_pin = 17                         # amplifier relay (GPIO, optional) ...
    amp_warmup_s = 5                     # ... powered this long before an item
    amp_hold_s = 60                      # ... and off this long after the last one
    mains_power_lost_pin = 22            # fault inputs (GPIO, active low, optional);
    amplifier_fault_pin = 23             # also speaker_line_open_pin
    gpio_mock = false                    # gpiozero's mock pins (tests, a desk without a Pi)
    relay_fallback_after_s = 10          # a relay's stream down this long: play its fallback, raise the fault

Relative paths (``state_dir``, ``sink_dir``, ``mqtt_ca_file``) are taken
relative to the directory of the configuration file.
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from schedules.signing import public_key_from_text

logger = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "/var/lib/loaxa-receiver"
SINKS = ("file", "null", "alsa")
_RX_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REQUIRED = ("rx_id", "mqtt_url", "controller_public_key", "media_base_url", "token")
OPTIONAL = (
    "mqtt_username",
    "mqtt_password",
    "mqtt_ca_file",
    "state_dir",
    "sink",
    "sink_dir",
    "preroll_ms",
    "heartbeat_s",
    "cache_max_mb",
    "disk_reserve_mb",
    "ntp_server",
    "amp_pin",
    "amp_warmup_s",
    "amp_hold_s",
    "mains_power_lost_pin",
    "amplifier_fault_pin",
    "speaker_line_open_pin",
    "gpio_mock",
    "sink_rate_ppm",
    "alsa_device",
    "relay_fallback_after_s",
)
FAULT_PIN_KEYS = ("mains_power_lost_pin", "amplifier_fault_pin", "speaker_line_open_pin")


class ConfigError(ValueError):
    """A configuration file is unreadable or names missing or invalid fields."""


@dataclass(frozen=True)
class BrokerAddress:
    """Where and how to reach the MQTT broker, parsed from ``mqtt_url``."""

    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @property
    def display(self) -> str:
        """The broker URL without credentials, for log lines."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


@dataclass(frozen=True)
class ReceiverConfig:
    """Everything one receiver agent needs to run."""

    rx_id: str
    mqtt_url: str
    controller_public_key: str
    media_base_url: str
    token: str
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    mqtt_ca_file: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    sink: str = "null"
    sink_dir: str | None = None
    preroll_ms: int = 3000
    heartbeat_s: float = 30.0
    cache_max_mb: int = 2048
    disk_reserve_mb: int = 100
    ntp_server: str | None = None
    amp_pin: int | None = None
    amp_warmup_s: float = 5.0
    amp_hold_s: float = 60.0
    fault_pins: tuple[tuple[str, int], ...] = ()
    gpio_mock: bool = False
    sink_rate_ppm: float = 0.0
    alsa_device: str = "default"
    relay_fallback_after_s: float = 10.0

    @property
    def broker(self) -> BrokerAddress:
        """The parsed broker address; explicit username/password override the URL's."""
        parsed = parse_mqtt_url(self.mqtt_url)
        return BrokerAddress(
            host=parsed.host,
            port=parsed.port,
            tls=parsed.tls,
            username=self.mqtt_username if self.mqtt_username is not None else parsed.username,
            password=self.mqtt_password if self.mqtt_password is not None else parsed.password,
        )

    @property
    def effective_sink_dir(self) -> str:
        """``sink_dir`` or its default, ``<state_dir>/sink``."""
        return self.sink_dir or str(Path(self.state_dir) / "sink")

    def redacted(self) -> dict[str, Any]:
        """The configuration as a dict with the password and token hidden, safe to log."""
        data = asdict(self)
        if data["mqtt_password"] is not None:
            data["mqtt_password"] = "***"
        data["token"] = "***"
        data["mqtt_url"] = _redact_url(self.mqtt_url)
        data["sink_dir"] = self.effective_sink_dir
        return data


def parse_mqtt_url(url: str) -> BrokerAddress:
    """Parse ``mqtt://[user:pass@]host[:port]`` or ``mqtts://...``; raises ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError("scheme must be mqtt or mqtts")
    if not parts.hostname:
        raise ValueError("no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("port must be 1-65535") from exc
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be scheme://[user:pass@]host:port with no path")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def _resolve(base: Path, value: str) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path))


def load_config(path: str | Path) -> ReceiverConfig:
    """Read and validate a receiver TOML file; raises ConfigError naming every problem."""
    path = Path(path)
    where = f"config {path}"
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    _warn_if_readable_by_others(path)
    return config_from_dict(raw, where=where, base_dir=path.resolve().parent)


def _warn_if_readable_by_others(path: Path) -> None:
    """The file holds the broker password and the media token: say so when any user may read it."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return
    if mode & 0o007:
        logger.warning("config %s is readable by every user (mode %o) and holds the broker password; "
                       "chmod 600 (or 640 root:loaxa, as install-receiver.sh does)", path, mode)


def config_from_dict(raw: dict[str, Any], *, where: str = "config", base_dir: Path | None = None) -> ReceiverConfig:
    """Validate a parsed mapping (as read from TOML); raises ConfigError naming every problem."""
    base = base_dir or Path.cwd()
    missing = [key for key in REQUIRED if raw.get(key) in (None, "")]
    problems: list[str] = []
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        logger.warning("%s: ignoring unknown keys %s", where, ", ".join(unknown))

    def text(key: str) -> str | None:
        """The string value of ``key``, None when absent or empty; notes a wrong type."""
        value = raw.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            problems.append(f"{key}: must be a string")
            return None
        return value

    rx_id = text("rx_id")
    if rx_id is not None and not _RX_ID.match(rx_id):
        problems.append("rx_id: must be 1-64 letters, digits, '.', '_' or '-'")
    mqtt_url = text("mqtt_url")
    if mqtt_url is not None:
        try:
            parse_mqtt_url(mqtt_url)
        except ValueError as exc:
            problems.append(f"mqtt_url: {exc}")
    key_text = text("controller_public_key")
    if key_text is not None:
        try:
            public_key_from_text(key_text)
        except ValueError:
            problems.append("controller_public_key: not a base64 raw Ed25519 public key")
    media_base_url = text("media_base_url")
    if media_base_url is not None:
        parts = urlsplit(media_base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append("media_base_url: must be http(s)://host[:port][/path]")
    token = text("token")
    username = text("mqtt_username")
    password = text("mqtt_password")
    ca_file = text("mqtt_ca_file")
    state_dir = text("state_dir") or DEFAULT_STATE_DIR
    sink_dir = text("sink_dir")
    sink = text("sink") or "null"
    if sink not in SINKS:
        problems.append(f"sink: must be one of {', '.join(SINKS)}")
    preroll_ms = raw.get("preroll_ms", 3000)
    if not isinstance(preroll_ms, int) or isinstance(preroll_ms, bool) or not 0 <= preroll_ms <= 60_000:
        problems.append("preroll_ms: must be an integer from 0 to 60000")
    heartbeat_s = raw.get("heartbeat_s", 30)
    if not isinstance(heartbeat_s, (int, float)) or isinstance(heartbeat_s, bool) or not heartbeat_s > 0:
        problems.append("heartbeat_s: must be a number above 0")
    sizes: dict[str, int] = {}
    for key, default in (("cache_max_mb", 2048), ("disk_reserve_mb", 100)):
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{key}: must be a whole number of megabytes, 0 or more")
        else:
            sizes[key] = value
    pins: dict[str, int] = {}
    for key in ("amp_pin", *FAULT_PIN_KEYS):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 63:
            problems.append(f"{key}: must be a GPIO number 0-63")
        else:
            pins[key] = value
    timings: dict[str, float] = {}
    for key, default_s in (("amp_warmup_s", 5.0), ("amp_hold_s", 60.0)):
        seconds = raw.get(key, default_s)
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds <= 3600:
            problems.append(f"{key}: must be 0-3600 seconds")
        else:
            timings[key] = float(seconds)
    sink_rate_ppm = raw.get("sink_rate_ppm", 0)
    if not isinstance(sink_rate_ppm, (int, float)) or isinstance(sink_rate_ppm, bool) or abs(sink_rate_ppm) > 10_000:
        problems.append("sink_rate_ppm: must be a number from -10000 to 10000")
        sink_rate_ppm = 0
    relay_fallback_after_s = raw.get("relay_fallback_after_s", 10)
    if (
        not isinstance(relay_fallback_after_s, (int, float))
        or isinstance(relay_fallback_after_s, bool)
        or not 0.5 <= relay_fallback_after_s <= 3600
    ):
        problems.append("relay_fallback_after_s: must be 0.5-3600 seconds")
        relay_fallback_after_s = 10
    gpio_mock = raw.get("gpio_mock", False)
    if not isinstance(gpio_mock, bool):
        problems.append("gpio_mock: must be true or false")

    if missing or problems:
        summary = ([f"missing {', '.join(missing)}"] if missing else []) + problems
        raise ConfigError(f"{where}: {'; '.join(summary)}")
    assert rx_id and mqtt_url and key_text and media_base_url and token  # narrowed by `missing`
    return ReceiverConfig(
        rx_id=rx_id,
        mqtt_url=mqtt_url,
        controller_public_key=key_text,
        media_base_url=media_base_url.rstrip("/"),
        token=token,
        mqtt_username=username,
        mqtt_password=password,
        mqtt_ca_file=_resolve(base, ca_file) if ca_file else None,
        state_dir=_resolve(base, state_dir),
        sink=sink,
        sink_dir=_resolve(base, sink_dir) if sink_dir else None,
        preroll_ms=int(preroll_ms),
        heartbeat_s=float(heartbeat_s),
        cache_max_mb=sizes["cache_max_mb"],
        disk_reserve_mb=sizes["disk_reserve_mb"],
        ntp_server=text("ntp_server"),
        amp_pin=pins.get("amp_pin"),
        amp_warmup_s=timings["amp_warmup_s"],
        amp_hold_s=timings["amp_hold_s"],
        fault_pins=tuple((k.removesuffix("_pin"), v) for k, v in pins.items() if k in FAULT_PIN_KEYS),
        gpio_mock=bool(gpio_mock),
        sink_rate_ppm=float(sink_rate_ppm),
        alsa_device=text("alsa_device") or "default",
        relay_fallback_after_s=float(relay_fallback_after_s),
    )
