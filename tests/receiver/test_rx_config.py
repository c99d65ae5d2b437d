"""Receiver configuration: loading, defaults, and errors that name every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.config import ConfigError, load_config, parse_mqtt_url

from rx_support import toml_text


def _write(tmp_path: Path, values: dict[str, object]) -> Path:
    path = tmp_path / "rx.toml"
    path.write_text(toml_text(values), encoding="utf-8")
    return path


def test_valid_config_gets_defaults(tmp_path: Path, public_key_text: str) -> None:
    path = _write(
        tmp_path,
        {
            "rx_id": "quang-phu-07",
            "mqtt_url": "mqtts://rx7:s%40cret@broker.example.vn",
            "controller_public_key": public_key_text,
            "media_base_url": "https://media.example.vn/",
            "token": "tok",
            "state_dir": "state",
        },
    )
    config = load_config(path)
    assert config.rx_id == "quang-phu-07"
    assert config.state_dir == str(tmp_path / "state")
    assert config.effective_sink_dir == str(tmp_path / "state" / "sink")
    assert config.sink == "null"
    assert config.preroll_ms == 3000
    assert config.heartbeat_s == 30
    assert config.relay_fallback_after_s == 10.0
    assert config.media_base_url == "https://media.example.vn"
    broker = config.broker
    assert (broker.host, broker.port, broker.tls) == ("broker.example.vn", 8883, True)
    assert (broker.username, broker.password) == ("rx7", "s@cret")
    redacted = config.redacted()
    assert "s%40cret" not in str(redacted) and "tok" not in redacted.values()
    assert redacted["token"] == "***"


def test_explicit_credentials_override_the_url(tmp_path: Path, public_key_text: str) -> None:
    path = _write(
        tmp_path,
        {
            "rx_id": "rx1",
            "mqtt_url": "mqtt://a:b@127.0.0.1:1884",
            "mqtt_username": "u",
            "mqtt_password": "p",
            "controller_public_key": public_key_text,
            "media_base_url": "http://127.0.0.1:8080",
            "token": "tok",
        },
    )
    config = load_config(path)
    assert (config.broker.username, config.broker.password, config.broker.port) == ("u", "p", 1884)
    assert config.redacted()["mqtt_password"] == "***"
    assert config.state_dir == "/var/lib/loaxa-receiver"


def test_error_names_every_missing_and_invalid_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "mqtt_url": "http://broker:1883",
            "controller_public_key": "not-a-key",
            "media_base_url": "http://127.0.0.1:8080",
            "sink": "pulseaudio",
            "preroll_ms": -5,
            "relay_fallback_after_s": 0,
        },
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"config {path}: missing rx_id, token;")
    assert "mqtt_url: scheme must be mqtt or mqtts" in message
    assert "controller_public_key:" in message
    assert "sink: must be one of file, null, alsa" in message
    assert "preroll_ms:" in message
    assert "relay_fallback_after_s: must be 0.5-3600 seconds" in message


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rx_id = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("tcp://h:1883", "scheme"),
        ("mqtt://:1883", "host"),
        ("mqtt://h:99999", "port"),
        ("mqtt://h:1883/path", "no path"),
    ],
)
def test_bad_mqtt_urls(url: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_mqtt_url(url)
