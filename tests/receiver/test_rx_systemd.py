"""systemd integration: the unit verifies, the agent says READY and feeds the watchdog over sd_notify."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from receiver.agent import Agent
from receiver.config import ReceiverConfig

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "loaxa-receiver.service"


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text()
    for needed in ("Type=notify", "WatchdogSec=", "Restart=always", "ProtectSystem=strict", "StateDirectory=",
                   "NoNewPrivileges=true"):
        assert needed in text
    # The venv of a real install does not exist here: point ExecStart at an executable that does.
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace("/opt/loaxa/venv/bin/loaxa-receiver", shutil.which("true") or "/bin/true"))
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_agent_sends_ready_and_watchdog(
    make_config: Callable[..., ReceiverConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")  # WatchdogSec=1: pings every 0.5 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    agent = Agent(make_config())
    try:
        agent.start()
        received = [sock.recv(1024).decode() for _ in range(3)]
    finally:
        agent.stop()
        stopping = sock.recv(1024).decode()
        sock.close()
    assert received[0].startswith("READY=1")
    assert received[1:] == ["WATCHDOG=1", "WATCHDOG=1"]
    assert stopping == "STOPPING=1"
