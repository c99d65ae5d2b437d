"""The heartbeat record: one name per field, the wire read defensively."""

from __future__ import annotations

import json

import pytest

from schedules.heartbeat import Heartbeat, HeartbeatError, Network


def _beat() -> Heartbeat:
    return Heartbeat(rx="phu-1", ts=1_700_000_000_000, uptime_s=12.5, version="0.1.0", manifests={"area/qd": 7},
                     playing="pi-1.20261204.0.qd", volume=80, cache_files=3, cache_bytes=1024,
                     disk_total_bytes=10_000, disk_free_bytes=4_000, clock_offset_ms=-2.5, temperature_c=51.0,
                     network=Network(type="cellular", signal_pct=61.0, rssi_dbm=-75.0, tech="lte", interface="wwan0"),
                     faults=("overheating",))


def test_a_heartbeat_round_trips() -> None:
    beat = _beat()
    assert Heartbeat.decode(beat.encode()) == beat
    body = json.loads(beat.encode())
    assert body["v"] == 1 and body["disk"] == {"total_bytes": 10_000, "free_bytes": 4_000}
    assert body["network"]["rssi_dbm"] == -75.0 and body["faults"] == ["overheating"]


def test_a_minimal_heartbeat_has_every_field_absent() -> None:
    beat = Heartbeat.decode(b'{"v":1,"rx":"phu-1","ts":5}')
    assert (beat.rx, beat.ts, beat.network, beat.manifests, beat.faults, beat.ignored) == ("phu-1", 5, None, {}, (), ())
    assert beat.clock_offset_ms is None and beat.version is None


@pytest.mark.parametrize("payload", [b"not json", b"[1]", b'{"v":2,"rx":"a","ts":1}', b'{"v":1,"ts":1}',
                                     b'{"v":1,"rx":"a","ts":"1"}', b'{"v":1,"rx":"a","ts":true}', b"[" * 100_000])
def test_what_is_not_a_heartbeat_is_refused(payload: bytes) -> None:
    with pytest.raises(HeartbeatError):
        Heartbeat.decode(payload)


def test_hostile_fields_are_read_as_absent_and_named() -> None:
    raw = {"v": 1, "rx": "phu-1", "ts": 5, "uptime_s": "long", "volume": True, "clock_offset_ms": float("inf"),
           "temperature_c": 40, "version": "<script>" * 50, "manifests": {"area/qd": 3, "area/x": "9"},
           "faults": ["overheating", "<b>x</b>", 7], "network": {"type": "satellite", "signal_pct": [1],
                                                                 "tech": "nr"}}
    beat = Heartbeat.decode(raw)
    assert beat.uptime_s is None and beat.volume is None and beat.clock_offset_ms is None
    assert beat.temperature_c == 40.0 and beat.version is not None and len(beat.version) == 40
    assert beat.manifests == {"area/qd": 3} and beat.faults == ("overheating",)
    assert beat.network == Network(type=None, signal_pct=None, tech="nr")
    assert set(beat.ignored) == {"uptime_s", "volume", "clock_offset_ms", "manifests", "faults", "network.type",
                                 "network.signal_pct"}
