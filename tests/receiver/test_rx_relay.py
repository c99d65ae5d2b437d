"""Relay items: a live stream (Icecast-style MP3, HLS) played for its slot, reconnected after a drop, and its
fallback played (and reported) while the stream stays down. Asserted on the recorded PCM: which tone played when.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.services import commands as controller_commands
from receiver.agent import Agent
from receiver.config import ReceiverConfig
from receiver.playout.relay import RELAY_RETURN_S
from schedules import events, topics
from schedules.manifest import Item, MediaRef

from rx_support import (
    SECOND,
    Broker,
    Collector,
    HlsStation,
    IcecastServer,
    Media,
    MediaServer,
    classify,
    content_bytes,
    free_port,
    now_ms,
    outbox_events,
    raw_mp3,
    runs,
    signed_manifest,
    sine_mp3_file,
    tones,
    unique,
    wait_until,
)

STREAM_HZ = 440
FALLBACK_HZ = 880
WINDOW_MS = 100


def _relay(item_id: str, start: int, duration_ms: int, url: str, fallback: MediaRef | None) -> Item:
    return Item(id=item_id, title=item_id, start_ms=start, duration_ms=duration_ms, priority="normal",
                media=fallback, kind="relay", url=url)


def _recordings(config: ReceiverConfig, item_id: str) -> list[tuple[dict[str, Any], bytes]]:
    found = []
    for sidecar in sorted(Path(config.effective_sink_dir).glob(f"{item_id}-*.json")):
        found.append((json.loads(sidecar.read_text()), sidecar.with_suffix(".pcm").read_bytes()))
    return sorted(found, key=lambda f: f[0]["first_sample_ms"] or 0)


def _labels(pcm: bytes) -> list[Any]:
    return classify(tones(pcm, WINDOW_MS), (STREAM_HZ, FALLBACK_HZ))


def _pattern(labels: list[Any], min_run: int = 2) -> list[Any]:
    """What played, in order: runs of at least ``min_run`` windows, ignoring unclassified ones (a window that
    straddles a switch, or one where the player inserted or dropped a few frames to stay on the clock)."""
    kept = [label for label, count in runs([x for x in labels if x != "?"]) if count >= min_run]
    return [label for label, _count in runs(kept)]


@pytest.fixture(scope="module")
def stream_mp3(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return raw_mp3(tmp_path_factory.mktemp("stream"), 20.0, STREAM_HZ)


@pytest.fixture(scope="module")
def fallback_mp3(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return sine_mp3_file(tmp_path_factory.mktemp("fallback"), 12.0, FALLBACK_HZ)


@pytest.fixture
def station(stream_mp3: bytes) -> Iterator[IcecastServer]:
    server = IcecastServer(stream_mp3)
    server.start()
    yield server
    server.stop()


def _agent_with(config: ReceiverConfig, signing_key: Any, items: list[Item]) -> Agent:
    agent = Agent(config)
    scope = f"rx/{agent.rx}"
    agent.handle_message(topics.sched(scope), signed_manifest(signing_key, scope, 1, items))
    return agent


def test_relay_plays_an_icecast_stream_for_its_slot(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, fallback_mp3: Media,
    station: IcecastServer, signing_key: Any,
) -> None:
    media_server.add(fallback_mp3)
    config = make_config(media_base_url=media_server.url)
    start = now_ms() + 1500
    agent = _agent_with(config, signing_key, [_relay("vov-1", start, 3000, station.url, fallback_mp3.ref)])
    try:
        agent.start()
        (finished,) = wait_until(lambda: outbox_events(agent, events.PLAYBACK_FINISHED), timeout=20)
        (started,) = outbox_events(agent, events.PLAYBACK_STARTED)
        faults = outbox_events(agent, events.FAULT_RAISED)
    finally:
        agent.stop()
    assert started["kind"] == "relay" and started["source"] == "stream" and started["url"] == station.url
    assert started["planned_start_ms"] == start
    assert finished["end_reason"] == "complete" and finished["fallback_ms"] == 0
    assert finished["planned_duration_ms"] == 3000 and finished["played_ms"] >= 2500
    assert not faults
    ((sidecar, pcm),) = _recordings(config, "vov-1")
    assert content_bytes(sidecar) == 3 * SECOND  # the output ran for the whole slot
    labels = _labels(pcm)
    assert labels.count(STREAM_HZ) >= 20 and _pattern(labels) == [STREAM_HZ], runs(labels)
    assert FALLBACK_HZ not in labels
    print(f"stream audio from {started['actual_start_ms'] - start} ms after t0; run {runs(labels)}")


def test_relay_plays_an_hls_stream(
    make_config: Callable[..., ReceiverConfig], tmp_path: Path, signing_key: Any
) -> None:
    hls = HlsStation(tmp_path / "hls", 660)
    try:
        wait_until(lambda: hls.segments() >= 3, timeout=20)
        config = make_config()
        start = now_ms() + 1500
        agent = _agent_with(config, signing_key, [_relay("hls-1", start, 3000, hls.url, None)])
        try:
            agent.start()
            (finished,) = wait_until(lambda: outbox_events(agent, events.PLAYBACK_FINISHED), timeout=20)
        finally:
            agent.stop()
    finally:
        hls.close()
    assert finished["end_reason"] == "complete" and finished["stream_ms"] >= 2500
    ((_sidecar, pcm),) = _recordings(config, "hls-1")
    labels = classify(tones(pcm, WINDOW_MS), (660,))
    assert labels.count(660) >= len(labels) - 5, runs(labels)


def test_relay_reconnects_when_the_station_comes_back(
    make_config: Callable[..., ReceiverConfig], station: IcecastServer, signing_key: Any
) -> None:
    config = make_config()  # the default grace (10 s) is longer than this outage: no fallback
    start = now_ms() + 1500
    agent = _agent_with(config, signing_key, [_relay("vov-2", start, 8000, station.url, None)])
    try:
        agent.start()
        wait_until(lambda: outbox_events(agent, events.PLAYBACK_STARTED), timeout=20)
        time.sleep(1.0)
        station.stop()  # off the air for 3 s: longer than the receiver's buffer (the station's 2 s burst)
        time.sleep(3.0)
        station.start()
        back_ms = now_ms()
        (finished,) = wait_until(lambda: outbox_events(agent, events.PLAYBACK_FINISHED), timeout=20)
        faults = outbox_events(agent, events.FAULT_RAISED)
        fallbacks = outbox_events(agent, events.RELAY_FALLBACK)
    finally:
        agent.stop()
    assert finished["end_reason"] == "complete" and finished["reconnects"] >= 1
    assert finished["silence_ms"] > 300 and finished["stream_ms"] >= 3000, finished
    assert not faults and not fallbacks
    ((sidecar, pcm),) = _recordings(config, "vov-2")
    labels = _labels(pcm)
    assert _pattern(labels) == [STREAM_HZ, None, STREAM_HZ], runs(labels)  # tone, the outage, the tone again
    last_gap = max(i for i, label in enumerate(labels) if label is None)
    resumed_ms = sidecar["first_sample_ms"] + (last_gap + 1) * WINDOW_MS
    print(f"audio again {resumed_ms - back_ms:.0f} ms after the station returned; run {runs(labels)}")


def test_relay_falls_back_while_the_stream_is_down_and_reports_it(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, fallback_mp3: Media,
    station: IcecastServer, broker: Broker, collector: Callable[[list[str]], Collector], signing_key: Any,
) -> None:
    media_server.add(fallback_mp3)
    config = make_config(media_base_url=media_server.url, mqtt_url=broker.url, relay_fallback_after_s=1.5)
    out = collector([topics.rx_events(config.rx_id)])
    start = now_ms() + 2000
    agent = _agent_with(config, signing_key, [_relay("vov-3", start, 11_000, station.url, fallback_mp3.ref)])
    topic = topics.rx_events(config.rx_id)

    def sent(type_: str) -> list[dict[str, Any]]:  # connected, the outbox empties: read what reached the broker
        return [e for e in (events.decode(p) for p in out.on(topic)) if e["type"] == type_]

    try:
        agent.start()
        assert agent.wait_connected(10)
        wait_until(lambda: sent(events.PLAYBACK_STARTED), timeout=20)
        time.sleep(1.0)
        station.stop()
        down_ms = now_ms()
        wait_until(lambda: sent(events.RELAY_FALLBACK), timeout=10)
        switched_ms = now_ms()
        station.start()
        back_ms = now_ms()
        wait_until(lambda: sent(events.PLAYBACK_FINISHED), timeout=20)
        wait_until(lambda: agent.outbox.count() == 0, timeout=10)
    finally:
        agent.stop()
    received = [events.decode(p) for p in out.on(topic)]  # decoded as the controller's telemetry decodes them
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in received:
        by_type.setdefault(event["type"], []).append(event)
    (fallback,) = by_type[events.RELAY_FALLBACK]
    assert fallback["item_id"] == "vov-3" and fallback["sha256"] == fallback_mp3.ref.sha256
    assert fallback["down_ms"] >= 1500 and fallback["reason"] and fallback["fallback_offset_ms"] == 0
    (raised,) = [e for e in by_type[events.FAULT_RAISED] if e["fault"] == "stream_unavailable"]
    assert raised["item_id"] == "vov-3" and raised["fallback"] is True
    (cleared,) = [e for e in by_type[events.FAULT_CLEARED] if e["fault"] == "stream_unavailable"]
    assert cleared["ts"] > raised["ts"]
    (started,) = by_type[events.PLAYBACK_STARTED]
    (finished,) = by_type[events.PLAYBACK_FINISHED]
    assert started["source"] == "stream"
    assert finished["end_reason"] == "complete" and finished["fallback_ms"] > 1000 and finished["stream_ms"] > 2000
    ((sidecar, pcm),) = _recordings(config, "vov-3")
    labels = _labels(pcm)
    # The stream, its outage (quiet for the grace), the fallback, the stream again once it held RELAY_RETURN_S.
    assert _pattern(labels) == [STREAM_HZ, None, FALLBACK_HZ, STREAM_HZ], runs(labels)
    first_fallback = labels.index(FALLBACK_HZ)
    back_to_stream = first_fallback + labels[first_fallback:].index(STREAM_HZ)
    t0 = sidecar["first_sample_ms"]
    print(f"fallback audible {t0 + first_fallback * WINDOW_MS - down_ms:.0f} ms after the station went off "
          f"(event after {switched_ms - down_ms} ms); stream again {t0 + back_to_stream * WINDOW_MS - back_ms:.0f} "
          f"ms after it returned (return hysteresis {RELAY_RETURN_S} s); run {runs(labels)}")
    out.publish(topics.rx_status(config.rx_id), b"", retain=True)  # no retained status left on the shared broker


def test_relay_with_the_station_off_air_plays_the_fallback_from_the_start(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, fallback_mp3: Media, signing_key: Any,
) -> None:
    media_server.add(fallback_mp3)
    config = make_config(media_base_url=media_server.url, relay_fallback_after_s=1.0)
    dead = f"http://127.0.0.1:{free_port()}/live.mp3"  # a station off the air: nobody listens there
    start = now_ms() + 1500
    agent = _agent_with(config, signing_key, [_relay("vov-4", start, 4000, dead, fallback_mp3.ref)])
    try:
        agent.start()
        (finished,) = wait_until(lambda: outbox_events(agent, events.PLAYBACK_FINISHED), timeout=20)
        (started,) = outbox_events(agent, events.PLAYBACK_STARTED)
        (fallback,) = outbox_events(agent, events.RELAY_FALLBACK)
        raised = [e for e in outbox_events(agent, events.FAULT_RAISED) if e["fault"] == "stream_unavailable"]
    finally:
        agent.stop()
    assert started["source"] == "fallback" and started["sha256"] == fallback_mp3.ref.sha256
    assert dead in fallback["reason"] and fallback["down_ms"] >= 1000, fallback
    assert len(raised) == 1
    assert finished["stream_ms"] == 0 and 2500 <= finished["fallback_ms"] <= 3100, finished
    ((_sidecar, pcm),) = _recordings(config, "vov-4")
    assert _pattern(_labels(pcm)) == [None, FALLBACK_HZ], runs(_labels(pcm))  # quiet for the grace, then fallback


def test_relay_without_fallback_and_no_stream_fails_with_a_reason(
    make_config: Callable[..., ReceiverConfig], signing_key: Any
) -> None:
    config = make_config(relay_fallback_after_s=0.5)
    dead = f"http://127.0.0.1:{free_port()}/live.mp3"
    start = now_ms() + 1000
    agent = _agent_with(config, signing_key, [_relay("vov-5", start, 2000, dead, None)])
    try:
        agent.start()
        (failed,) = wait_until(lambda: outbox_events(agent, events.PLAYBACK_FAILED), timeout=20)
        raised = [e for e in outbox_events(agent, events.FAULT_RAISED) if e["fault"] == "stream_unavailable"]
        assert not outbox_events(agent, events.PLAYBACK_STARTED) and not outbox_events(agent, events.RELAY_FALLBACK)
    finally:
        agent.stop()
    assert failed["code"] == "relay.unavailable" and failed["item_id"] == "vov-5" and dead in failed["reason"]
    assert len(raised) == 1 and raised[0]["fallback"] is False


def test_emergency_preempts_a_relay_which_is_rejoined_live(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, station: IcecastServer,
    tmp_path: Path, signing_key: Any,
) -> None:
    alarm = sine_mp3_file(tmp_path, 1.0, FALLBACK_HZ)
    media_server.add(alarm)
    config = make_config(media_base_url=media_server.url)
    scope = f"rx/{config.rx_id}"
    start = now_ms() + 1500
    agent = _agent_with(config, signing_key, [_relay("vov-6", start, 5000, station.url, None)])
    try:
        agent.start()
        wait_until(lambda: outbox_events(agent, events.PLAYBACK_STARTED), timeout=20)
        time.sleep(1.0)
        storm = unique("storm-")
        media = {"sha256": alarm.ref.sha256, "path": alarm.ref.path, "bytes": alarm.ref.bytes,
                 "duration_ms": alarm.ref.duration_ms}
        agent.handle_message(topics.cmd(scope), controller_commands.build(
            signing_key, scope, "emergency", {"id": storm, "media": media, "volume": 100})[1])
        wait_until(lambda: len(outbox_events(agent, events.PLAYBACK_FINISHED)) >= 3, timeout=20)
        finished = outbox_events(agent, events.PLAYBACK_FINISHED)
        started = outbox_events(agent, events.PLAYBACK_STARTED)
    finally:
        agent.stop()
    assert [(e["item_id"], e["end_reason"]) for e in finished] == [
        ("vov-6", "preempted"), (storm, "complete"), ("vov-6", "complete")]
    assert started[2]["item_id"] == "vov-6" and started[2]["offset_ms"] > 2000 and started[2]["source"] == "stream"
    first, again = _recordings(config, "vov-6")
    assert _pattern(_labels(first[1])) == [STREAM_HZ] and _pattern(_labels(again[1])) == [STREAM_HZ]
    assert again[0]["first_sample_ms"] - first[0]["closed_ms"] >= 1000  # the emergency played in between
