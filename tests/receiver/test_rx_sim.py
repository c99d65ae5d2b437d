"""End to end through a real broker: retained conf and manifest in, two receivers play in step, events out."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from receiver.config import ReceiverConfig
from receiver.sim import Simulator
from schedules import topics

from rx_support import (
    Broker,
    Collector,
    Media,
    MediaServer,
    content_bytes,
    make_item,
    now_ms,
    signed_conf,
    signed_manifest,
    unique,
    wait_until,
)


def _sidecar(config: ReceiverConfig) -> dict[str, Any] | None:
    found = list(Path(config.effective_sink_dir).glob("*.json"))
    if not found:
        return None
    data: dict[str, Any] = json.loads(found[0].read_text())
    return data if data["closed_ms"] is not None else None


def _all_closed(configs: list[ReceiverConfig]) -> list[dict[str, Any]] | None:
    found = [_sidecar(c) for c in configs]
    return [s for s in found if s is not None] if all(found) else None


def test_two_receivers_play_a_retained_manifest_together(
    make_config: Callable[..., ReceiverConfig],
    broker: Broker,
    collector: Callable[[list[str]], Collector],
    media_server: MediaServer,
    sine_mp3: Media,
    signing_key: Any,
) -> None:
    media_server.add(sine_mp3)
    configs = [make_config(mqtt_url=broker.url, media_base_url=media_server.url, heartbeat_s=0.5) for _ in range(2)]
    area = f"area/{unique()}"
    start = now_ms() + 4000
    item = make_item("storm-warning", start, 2000, sine_mp3.ref, priority="priority")
    retained = [topics.sched(area)] + [topics.conf(c.rx_id) for c in configs]
    out = collector([topics.rx_events(c.rx_id) for c in configs] + [topics.rx_hb(c.rx_id) for c in configs])
    for config in configs:
        out.publish(topics.conf(config.rx_id), signed_conf(signing_key, config.rx_id, 1, [area]), retain=True)
    out.publish(topics.sched(area), signed_manifest(signing_key, area, 1, [item]), retain=True)

    sim = Simulator(configs)
    try:
        sim.start()
        assert sim.wait_connected(10)
        sidecars = wait_until(lambda: _all_closed(configs), 30)
        wait_until(lambda: all(a.outbox.count() == 0 for a in sim.agents), 10)
        heartbeats = [json.loads(p) for p in out.on(topics.rx_hb(configs[0].rx_id))]
    finally:
        sim.stop()
        for topic in retained:
            out.publish(topic, b"", retain=True)
        for config in configs:
            out.publish(topics.rx_status(config.rx_id), b"", retain=True)

    firsts = [s["first_sample_ms"] for s in sidecars]
    assert all(abs(f - start) < 500 for f in firsts)
    assert abs(firsts[0] - firsts[1]) < 500
    assert all(content_bytes(s) == 2 * 44100 * 2 for s in sidecars)
    for config in configs:
        types = [json.loads(p)["type"] for p in out.on(topics.rx_events(config.rx_id))]
        for expected in ("conf.accepted", "manifest.accepted", "playback.started", "playback.finished"):
            assert expected in types, (config.rx_id, types)
    assert heartbeats and heartbeats[-1]["rx"] == configs[0].rx_id
    assert set(heartbeats[-1]) == {
        "v",
        "rx",
        "ts",
        "uptime_s",
        "manifests",
        "playing",
        "cache_files",
        "disk_free_bytes",
        "version",
        "volume",
        "cache_bytes",
        "disk",
        "clock_offset_ms",
        "temperature_c",
        "network",
        "faults",
    }
    assert heartbeats[-1]["manifests"] == {area: 1}
    assert heartbeats[-1]["cache_files"] == 1
    assert "storm-warning" in [hb["playing"] for hb in heartbeats]


def test_simulator_refuses_duplicate_receivers(make_config: Callable[..., ReceiverConfig]) -> None:
    config = make_config()
    with pytest.raises(ValueError, match="appears twice"):
        Simulator([config, config])
