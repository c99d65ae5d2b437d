"""The agent as a real process: bad configs exit 1, an unreachable broker is retried, SIGTERM stops it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rx_support import free_port, toml_text, wait_until

REPO = Path(__file__).resolve().parents[2]


def _receiver(*args: str, stderr_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with stderr_path.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "receiver", *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def test_bad_config_exits_1_naming_the_fields(tmp_path: Path) -> None:
    config = tmp_path / "rx.toml"
    config.write_text(toml_text({"mqtt_url": "ftp://x", "media_base_url": "http://127.0.0.1:1"}), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "receiver", "run", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"config {config}: missing rx_id, controller_public_key, token" in result.stderr
    assert "mqtt_url: scheme must be mqtt or mqtts" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_broker_is_retried_and_sigterm_stops_cleanly(tmp_path: Path, public_key_text: str) -> None:
    port = free_port()
    config = tmp_path / "rx.toml"
    config.write_text(
        toml_text(
            {
                "rx_id": "rx-unreachable",
                "mqtt_url": f"mqtt://127.0.0.1:{port}",
                "controller_public_key": public_key_text,
                "media_base_url": "http://127.0.0.1:1",
                "token": "secret-token",
                "state_dir": str(tmp_path / "state"),
            }
        ),
        encoding="utf-8",
    )
    stderr_path = tmp_path / "stderr.log"
    proc = _receiver("run", "--config", str(config), stderr_path=stderr_path)
    try:
        needle = f"cannot reach MQTT broker mqtt://127.0.0.1:{port}"
        wait_until(lambda: stderr_path.read_text(errors="replace").count(needle) >= 2, timeout=30)  # a retry
        assert proc.poll() is None, stderr_path.read_text(errors="replace")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = stderr_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert "secret-token" not in log
    assert "received SIGTERM" in log and "rx rx-unreachable: stopped" in log
    # Backoff: the attempts are spread out, not a busy loop.
    lines = [line for line in log.splitlines() if needle in line]
    assert len(lines) < 10


def test_sim_runs_a_directory_of_configs_until_sigint(tmp_path: Path, public_key_text: str) -> None:
    for n in (1, 2):
        (tmp_path / f"rx{n}.toml").write_text(
            toml_text(
                {
                    "rx_id": f"sim-rx-{n}",
                    "mqtt_url": f"mqtt://127.0.0.1:{free_port()}",
                    "controller_public_key": public_key_text,
                    "media_base_url": "http://127.0.0.1:1",
                    "token": "t",
                    "state_dir": f"state{n}",
                }
            ),
            encoding="utf-8",
        )
    stderr_path = tmp_path / "stderr.log"
    proc = _receiver("sim", "--config-dir", str(tmp_path), stderr_path=stderr_path)
    try:
        wait_until(lambda: "simulator: 2 receiver(s) started" in stderr_path.read_text(errors="replace"), timeout=30)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = stderr_path.read_text(errors="replace")
    assert "rx sim-rx-1: stopped" in log and "rx sim-rx-2: stopped" in log
    assert (tmp_path / "state1" / "outbox.db").exists() and (tmp_path / "state2" / "outbox.db").exists()
