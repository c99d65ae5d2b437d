"""The controller CLI: init-db, create-user, keys, demo, provision."""

from __future__ import annotations

import tomllib

from click.testing import CliRunner

from controller.cli import main


def _run(tmp_path, monkeypatch, *args, input=None):
    monkeypatch.setenv("LOAXA_VAR_DIR", str(tmp_path / "var"))
    result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return result


def test_cli_round(tmp_path, monkeypatch):
    assert _run(tmp_path, monkeypatch, "init-db").exit_code == 0
    keys = _run(tmp_path, monkeypatch, "keys")
    assert keys.exit_code == 0 and len(keys.output.strip()) == 44
    assert _run(tmp_path, monkeypatch, "keys").output == keys.output  # created once, then kept

    demo = _run(tmp_path, monkeypatch, "demo", "--admin-password", "admin-pass-1")
    assert demo.exit_code == 0 and "6 receivers" in demo.output

    made = _run(tmp_path, monkeypatch, "create-user", "chi", "--role", "operator", "--area", "quang-dien/quang-phu",
                input="mat-khau-123\nmat-khau-123\n")
    assert made.exit_code == 0, made.output
    twice = "mat-khau-123\nmat-khau-123\n"
    again = _run(tmp_path, monkeypatch, "create-user", "chi", input=twice)
    assert again.exit_code != 0 and "exists" in again.output
    bad_area = _run(tmp_path, monkeypatch, "create-user", "lan", "--area", "nowhere", input=twice)
    assert bad_area.exit_code != 0 and "no area" in bad_area.output
    short = _run(tmp_path, monkeypatch, "create-user", "lan", input="short\nshort\n")
    assert short.exit_code != 0 and "8 characters" in short.output

    out = tmp_path / "rx.toml"
    prov = _run(tmp_path, monkeypatch, "provision", "phu-9", "--area", "quang-dien/quang-phu",
                "--mqtt-url", "mqtt://127.0.0.1:1883", "--out", str(out))
    assert prov.exit_code == 0, prov.output
    conf = tomllib.loads(out.read_text())
    assert conf["rx_id"] == "phu-9" and conf["controller_public_key"] == keys.output.strip()
    assert conf["sink"] == "alsa"  # a provisioned box plays through its sound card unless told otherwise
    assert out.stat().st_mode & 0o777 == 0o600
    bad = _run(tmp_path, monkeypatch, "provision", "Phu 9", "--area", "quang-dien/quang-phu",
               "--mqtt-url", "mqtt://127.0.0.1:1883", "--out", str(tmp_path / "bad.toml"))
    assert bad.exit_code != 0 and "lower-case" in bad.output and not (tmp_path / "bad.toml").exists()


def test_bad_environment_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("LOAXA_MQTT_URL", "http://nope")
    result = _run(tmp_path, monkeypatch, "init-db")
    assert result.exit_code == 1 and "MQTT_URL must start with mqtt://" in result.output
