"""Health probes and the heartbeat's faults: clock offset (chrony, SNTP), temperature, disk."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from receiver import health
from receiver.agent import Agent
from receiver.config import ReceiverConfig

TRACKING = (
    "C0A80101,gw.lan,3,1700000000.123,0.250000000,0.000012,0.000020,-12.345,0.010,0.020,0.001,0.002,64.0,Normal\n"
)


def test_parse_chrony_tracking() -> None:
    assert health.parse_chrony_tracking(TRACKING) == pytest.approx(250.0)
    assert health.parse_chrony_tracking("garbage") is None


def test_sntp_query_against_a_local_server() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    skew_s = 0.5  # this server's clock is 500 ms ahead of ours

    def serve() -> None:
        _data, addr = server.recvfrom(512)
        now = time.time() + skew_s + health._NTP_EPOCH
        stamp = struct.pack("!II", int(now), int((now % 1) * 2**32))
        server.sendto(b"\x24" + 31 * b"\0" + stamp + stamp, addr)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        offset = health.sntp_offset_ms("127.0.0.1", server.getsockname()[1])
    finally:
        thread.join(5)
        server.close()
    assert offset == pytest.approx(-500.0, abs=50)
    assert health.sntp_offset_ms("127.0.0.1", 9, timeout=0.2) is None


def test_thermal_zones(tmp_path: Path) -> None:
    for n, milli in enumerate((45000, 82500)):
        (tmp_path / f"thermal_zone{n}").mkdir()
        (tmp_path / f"thermal_zone{n}" / "temp").write_text(f"{milli}\n")
    assert health.cpu_temperature_c(tmp_path) == 82.5
    assert health.cpu_temperature_c(tmp_path / "none") is None


def test_heartbeat_raises_and_clears_the_clock_fault(
    make_config: Callable[..., ReceiverConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chronyc = tmp_path / "chronyc"  # chrony cannot run here: a stand-in prints what chronyc would
    offset_file = tmp_path / "offset"
    chronyc.write_text(f"#!/bin/sh\nprintf 'x,y,3,1.0,%s,0,0,0,0,0,0,0,0,Normal\\n' \"$(cat {offset_file})\"\n")
    chronyc.chmod(0o755)
    monkeypatch.setenv("LOAXA_CHRONYC", str(chronyc))
    agent = Agent(make_config())
    try:
        offset_file.write_text("0.180")
        body = agent.heartbeat()
        assert body["clock_offset_ms"] == 180.0 and body["version"] and body["disk"]["total_bytes"] > 0
        assert body["volume"] == 80 and body["cache_bytes"] == 0
        assert agent.heartbeat()["faults"] == ["clock_unsynchronised"]  # still off: raised once, not twice
        offset_file.write_text("0.002")
        assert agent.heartbeat()["faults"] == []
        found: list[dict[str, Any]] = [json.loads(p.payload) for p in agent.outbox.pending()]
    finally:
        agent.stop()
    clock = [(e["type"], e["fault"]) for e in found if e.get("fault") == "clock_unsynchronised"]
    assert clock == [("fault.raised", "clock_unsynchronised"), ("fault.cleared", "clock_unsynchronised")]
