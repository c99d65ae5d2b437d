"""Provisioning: the controller writes a bundle the receiver config loader and the installer accept."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli import main
from controller.services import brokerauth
from receiver.config import load_config

REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> object:
    monkeypatch.setenv("LOAXA_VAR_DIR", str(tmp_path / "var"))
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_bundle_has_config_credentials_ca_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _run(tmp_path, monkeypatch, "init-db").exit_code == 0  # type: ignore[attr-defined]
    assert _run(tmp_path, monkeypatch, "demo", "--admin-password", "admin-pass-1").exit_code == 0  # type: ignore[attr-defined]
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    bundle = tmp_path / "bundle"
    result = _run(tmp_path, monkeypatch, "provision", "phu-42", "--area", "quang-dien/quang-phu",
                  "--mqtt-url", "mqtts://broker.example.vn:8883", "--bundle", str(bundle), "--ca-file", str(ca))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    config = load_config(bundle / "receiver.toml")
    assert config.rx_id == "phu-42" and config.broker.tls and config.broker.username == "phu-42"
    assert config.mqtt_ca_file == str(bundle / "ca.crt") and (bundle / "ca.crt").read_text() == ca.read_text()
    assert (bundle / "controller.pub").read_text().strip() == config.controller_public_key
    # The broker's line is hashed: the password is in the bundle once, in receiver.toml.
    user, hashed = (bundle / "mosquitto-passwd").read_text().strip().split(":", 1)
    assert user == "phu-42" and len(config.broker.password) >= 24
    assert hashed.startswith("$7$") and brokerauth.check_password(hashed, config.broker.password)
    assert [f.name for f in bundle.iterdir() if config.broker.password in f.read_text()] == ["receiver.toml"]
    assert "phu-42" in result.output and config.broker.password not in result.output
    for name in ("receiver.toml", "mosquitto-passwd"):
        assert (bundle / name).stat().st_mode & 0o777 == 0o600
    missing = _run(tmp_path, monkeypatch, "provision", "phu-43", "--area", "quang-dien/quang-phu",
                   "--mqtt-url", "mqtt://127.0.0.1:1883")
    assert missing.exit_code != 0  # type: ignore[attr-defined]


def test_installer_script_is_valid_shell() -> None:
    script = REPO / "deploy" / "install-receiver.sh"
    assert script.stat().st_mode & 0o111
    subprocess.run(["sh", "-n", str(script)], check=True, timeout=30)


@pytest.mark.skipif(os.geteuid() != 0, reason="the installer stops at once unless root")
def test_installer_refuses_an_archive_without_a_config(tmp_path: Path) -> None:
    """An archive lacking receiver.toml is refused, not read as the current directory (which holds one here).

    Only the tools the bundle check needs are on PATH: had the check let it through, the installer would stop
    at the next command (command not found) instead of changing this machine.
    """
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("sh", "id", "tar", "gzip", "find", "head", "dirname", "mktemp", "rm"):
        found = shutil.which(name)
        assert found, name
        (tools / name).symlink_to(found)
    (tmp_path / "notes.txt").write_text("not a bundle\n")
    archive = tmp_path / "bundle.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "notes.txt", arcname="notes.txt")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "receiver.toml").write_text('rx_id = "someone-else"\n')
    result = subprocess.run(["sh", str(REPO / "deploy" / "install-receiver.sh"), str(archive)], cwd=cwd,
                            env={"PATH": str(tools), "LOAXA_SKIP_APT": "1", "LOAXA_SKIP_SYSTEMD": "1"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "holds no receiver.toml" in result.stderr, result
