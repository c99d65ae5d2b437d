"""The player: on time by the local clock, into the file sink, also with the broker down."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from receiver.agent import Agent
from receiver.config import ReceiverConfig
from schedules import topics

from rx_support import (
    SECOND,
    Media,
    MediaServer,
    content_bytes,
    make_item,
    now_ms,
    outbox_events,
    signed_conf,
    signed_manifest,
    sine_mp3_file,
    unique,
    wait_until,
)


def _sidecars(config: ReceiverConfig) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(config.effective_sink_dir).glob("*.json"))]


def test_plays_on_time_with_the_broker_down(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, sine_mp3: Media, signing_key: Any
) -> None:
    media_server.add(sine_mp3)
    config = make_config(media_base_url=media_server.url, heartbeat_s=0.5)
    area = f"area/{unique()}"
    start = now_ms() + 2500
    item = make_item("news-1", start, 2000, sine_mp3.ref)
    agent = Agent(config)
    try:
        agent.handle_message(topics.conf(agent.rx), signed_conf(signing_key, agent.rx, 1, [area]))
        agent.handle_message(topics.sched(area), signed_manifest(signing_key, area, 1, [item]))
        agent.start()  # the broker in the config is unreachable: playback must not care
        finished = wait_until(lambda: outbox_events(agent, "playback.finished"), timeout=20)
        assert agent.cache.path(sine_mp3.ref.sha256) is not None
        assert agent.heartbeat()["manifests"] == {area: 1}
    finally:
        agent.stop()
    (started,) = [e for e in _events_after_stop(config) if e["type"] == "playback.started"]
    assert started["item_id"] == "news-1" and started["scope"] == area
    assert started["planned_start_ms"] == start and started["offset_ms"] == 0
    assert started["sha256"] == sine_mp3.ref.sha256
    assert abs(started["actual_start_ms"] - start) < 500
    assert finished[0]["played_ms"] == 2000 and finished[0]["planned_duration_ms"] == 2000
    assert finished[0]["end_reason"] == "complete"
    (sidecar,) = _sidecars(config)
    assert sidecar["item_id"] == "news-1" and sidecar["planned_start_ms"] == start
    assert abs(sidecar["first_sample_ms"] - start) < 500
    assert content_bytes(sidecar) == 2 * SECOND
    assert sidecar["closed_ms"] >= sidecar["first_sample_ms"] + 1900


def _events_after_stop(config: ReceiverConfig) -> list[dict[str, Any]]:
    from receiver.outbox import Outbox

    box = Outbox(Path(config.state_dir) / "outbox.db")
    try:
        return [json.loads(p.payload) for p in box.pending()]
    finally:
        box.close()


def test_restart_mid_item_resumes_at_the_elapsed_offset(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, sine_mp3: Media, signing_key: Any
) -> None:
    media_server.add(sine_mp3)
    config = make_config(media_base_url=media_server.url)
    scope = f"rx/{config.rx_id}"
    start = now_ms() - 1500  # the item began 1.5 s before this "restart"
    item = make_item("news-2", start, 3000, sine_mp3.ref)
    agent = Agent(config)
    try:
        agent.handle_message(topics.sched(scope), signed_manifest(signing_key, scope, 1, [item]))
        agent.cache.fetch(sine_mp3.ref)  # cached during the previous run
        agent.start()
        (finished,) = wait_until(lambda: outbox_events(agent, "playback.finished"), timeout=20)
        (started,) = outbox_events(agent, "playback.started")
    finally:
        agent.stop()
    assert started["offset_ms"] >= 1500
    assert abs(started["actual_start_ms"] - (start + started["offset_ms"])) < 500
    assert finished["played_ms"] == 3000 - started["offset_ms"]
    (sidecar,) = _sidecars(config)
    assert abs(content_bytes(sidecar) - (3000 - started["offset_ms"]) * SECOND / 1000) <= 2


def test_media_not_cached_at_start_fails_once(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, sine_mp3: Media, signing_key: Any
) -> None:
    # The media server does not have the file: the download fails, the item cannot play.
    config = make_config(media_base_url=media_server.url)
    scope = f"rx/{config.rx_id}"
    start = now_ms() + 1000
    agent = Agent(config)
    try:
        agent.handle_message(
            topics.sched(scope),
            signed_manifest(signing_key, scope, 1, [make_item("news-3", start, 1000, sine_mp3.ref)]),
        )
        agent.start()
        (failed,) = wait_until(lambda: outbox_events(agent, "playback.failed"), timeout=20)
        (fault,) = outbox_events(agent, "fault.raised")
    finally:
        agent.stop()
    assert failed["item_id"] == "news-3" and failed["code"] == "media.not_cached"
    assert fault["fault"] == "download_failed" and fault["code"] == "download.http"
    assert "404" in fault["reason"]
    assert not _sidecars(config)


def test_merged_timeline_plays_back_to_back_items_once_each_on_time(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, sine_mp3: Media, signing_key: Any
) -> None:
    media_server.add(sine_mp3)
    config = make_config(media_base_url=media_server.url)
    wide, narrow = f"area/{unique()}", f"area/{unique()}"
    t0 = now_ms() + 2000
    wide_items = [
        make_item("district-1", t0, 1000, sine_mp3.ref),
        make_item("district-2", t0 + 1000, 800, sine_mp3.ref),  # right after district-1
    ]
    # Overlaps district-1 with the same priority: the wider area wins, this one is dropped.
    narrow_items = [make_item("commune-1", t0 + 200, 1000, sine_mp3.ref)]
    agent = Agent(config)
    try:
        agent.handle_message(topics.conf(agent.rx), signed_conf(signing_key, agent.rx, 1, [wide, narrow]))
        agent.handle_message(topics.sched(wide), signed_manifest(signing_key, wide, 1, wide_items))
        agent.handle_message(topics.sched(narrow), signed_manifest(signing_key, narrow, 1, narrow_items))
        agent.start()
        wait_until(lambda: len(outbox_events(agent, "playback.finished")) >= 2, timeout=20)
        started = outbox_events(agent, "playback.started")
        finished = outbox_events(agent, "playback.finished")
    finally:
        agent.stop()
    assert [e["item_id"] for e in started] == ["district-1", "district-2"]
    assert [e["offset_ms"] for e in started] == [0, 0]
    assert [e["end_reason"] for e in finished] == ["complete", "complete"]
    sidecars = sorted(_sidecars(config), key=lambda s: s["planned_start_ms"])
    assert [s["item_id"] for s in sidecars] == ["district-1", "district-2"]
    # The second item was prepared during the first: it starts on time, not after a decoder start-up.
    assert all(abs(s["first_sample_ms"] - s["planned_start_ms"]) < 100 for s in sidecars)
    assert sidecars[1]["bytes"] >= 0.9 * 0.8 * SECOND


def test_item_followed_by_a_bare_separator_plays_to_its_end(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, sine_mp3: Media, signing_key: Any
) -> None:
    """Near its end the player prepares the next item; a separator has no media to prepare (it once cut the item)."""
    from schedules.manifest import Item

    media_server.add(sine_mp3)
    config = make_config(media_base_url=media_server.url)
    scope = f"rx/{config.rx_id}"
    start = now_ms() + 1500
    items = [make_item("news-4", start, 2000, sine_mp3.ref),
             Item(id="pause", title="", start_ms=start + 2000, duration_ms=1000, priority="normal", media=None,
                  kind="separator")]
    agent = Agent(config)
    try:
        agent.handle_message(topics.sched(scope), signed_manifest(signing_key, scope, 1, items))
        agent.start()
        (finished,) = wait_until(lambda: outbox_events(agent, "playback.finished"), timeout=20)
    finally:
        agent.stop()
    assert finished["item_id"] == "news-4" and finished["end_reason"] == "complete", finished
    assert finished["played_ms"] == 2000


def test_an_item_withdrawn_while_it_plays_ends_and_another_keeps_playing(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, signing_key: Any, tmp_path: Path
) -> None:
    """A relay stopped (or an item cancelled) at the controller: the new manifest lacks it, so it ends at once
    as ``withdrawn``; a new manifest that still holds the playing item changes nothing for it."""
    sine_mp3 = sine_mp3_file(tmp_path, 60.0, 440)  # longer than the test: it cannot end by itself
    media_server.add(sine_mp3)
    config = make_config(media_base_url=media_server.url)
    area = f"area/{unique()}"
    start = now_ms() + 1500
    long_item = make_item("long", start, 60 * SECOND, sine_mp3.ref)
    later = make_item("later", start + 120 * SECOND, 2000, sine_mp3.ref)
    agent = Agent(config)
    try:
        agent.handle_message(topics.conf(agent.rx), signed_conf(signing_key, agent.rx, 1, [area]))
        agent.handle_message(topics.sched(area), signed_manifest(signing_key, area, 1, [long_item]))
        agent.start()
        wait_until(lambda: outbox_events(agent, "playback.started"), timeout=20)
        # Another item added: the playing one is still in the programme and goes on.
        agent.handle_message(topics.sched(area), signed_manifest(signing_key, area, 2, [long_item, later]))
        wait_until(lambda: any(e["version"] == 2 for e in outbox_events(agent, "manifest.accepted")), timeout=10)
        assert not outbox_events(agent, "playback.finished")
        withdrawn_ms = now_ms()
        agent.handle_message(topics.sched(area), signed_manifest(signing_key, area, 3, [later]))
        (finished,) = wait_until(lambda: outbox_events(agent, "playback.finished"), timeout=10)
        assert finished["item_id"] == "long" and finished["end_reason"] == "withdrawn"
        assert finished["ts"] - withdrawn_ms < 1000, finished
        assert finished["played_ms"] < 30 * SECOND
    finally:
        agent.stop()
