"""The decoder (ffmpeg) killed in the middle of an item: ``player_crashed`` raised, playback goes on where the
item stands, and the fault clears once the next item plays cleanly."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from receiver.agent import Agent
from receiver.config import ReceiverConfig
from schedules import events, topics

from rx_support import (
    SECOND,
    Media,
    MediaServer,
    classify,
    content_bytes,
    ffmpeg_pids,
    make_item,
    now_ms,
    outbox_events,
    runs,
    signed_manifest,
    sine_mp3_file,
    tones,
    wait_until,
)


@pytest.fixture(scope="module")
def long_mp3(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return sine_mp3_file(tmp_path_factory.mktemp("audio"), 6.0, 523)


def test_killed_decoder_raises_player_crashed_and_playback_goes_on(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, long_mp3: Media, sine_mp3: Media,
    signing_key: Any,
) -> None:
    media_server.add(long_mp3)
    media_server.add(sine_mp3)
    config = make_config(media_base_url=media_server.url)
    scope = f"rx/{config.rx_id}"
    start = now_ms() + 1500
    items = [make_item("news", start, 6000, long_mp3.ref), make_item("next", start + 6500, 1000, sine_mp3.ref)]
    agent = Agent(config)
    try:
        agent.handle_message(topics.sched(scope), signed_manifest(signing_key, scope, 1, items))
        agent.start()
        wait_until(lambda: outbox_events(agent, events.PLAYBACK_STARTED), timeout=20)
        time.sleep(1.5)
        path = agent.cache.path(long_mp3.ref.sha256)
        assert path is not None
        (pid,) = ffmpeg_pids(str(path))  # the decoder of "news", a real ffmpeg
        killed_ms = now_ms()
        os.kill(pid, signal.SIGKILL)
        (raised,) = wait_until(lambda: outbox_events(agent, events.FAULT_RAISED), timeout=10)
        restarted = wait_until(lambda: [p for p in ffmpeg_pids(str(path)) if p != pid], timeout=10)
        wait_until(lambda: len(outbox_events(agent, events.PLAYBACK_FINISHED)) >= 2, timeout=20)
        finished = outbox_events(agent, events.PLAYBACK_FINISHED)
        cleared = outbox_events(agent, events.FAULT_CLEARED)
    finally:
        agent.stop()
    assert raised["fault"] == "player_crashed" and raised["item_id"] == "news"
    assert "killed by signal 9" in raised["reason"] and 1000 <= raised["offset_ms"] <= 3500, raised
    assert restarted
    news, following = finished
    assert news["item_id"] == "news" and news["end_reason"] == "complete" and news["decoder_restarts"] == 1
    assert news["played_ms"] == 6000, news  # the content went on where it stopped: nothing lost
    assert following["item_id"] == "next" and following["end_reason"] == "complete"
    assert [(c["fault"], c["item_id"]) for c in cleared] == [("player_crashed", "next")]  # after a clean item
    sidecar = json.loads((Path(config.effective_sink_dir) / f"news-{start}.json").read_text())
    pcm = (Path(config.effective_sink_dir) / f"news-{start}.pcm").read_bytes()
    assert content_bytes(sidecar) == 6 * SECOND
    labels = classify(tones(pcm), (523,))
    assert None not in labels[1:-1], runs(labels)  # no silence, not even where the new decoder took over
    # The tone everywhere but in the few windows around that junction, where the content jumps to the
    # restart point and the drift correction catches up (how many depends on the machine's load: with
    # the whole suite and two more test runs on 2 cores, odd windows were seen up to 5 after it).
    junction = raised["offset_ms"] // 100
    steady = [label for i, label in enumerate(labels[1:-1], 1) if not -3 <= i - junction <= 6]
    assert len(steady) >= len(labels) - 12 and set(steady) == {523}, runs(labels)
    print(f"fault raised {raised['ts'] - killed_ms} ms after the kill (the audio already decoded played first); "
          f"played {news['played_ms']} of 6000 ms; ended {sidecar['closed_ms'] - start - 6000:+.0f} ms off schedule")
