"""Drift correction: a sink whose clock runs fast or slow is held to the system clock for the whole item."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from receiver.agent import Agent
from receiver.config import ReceiverConfig
from receiver.sinks import FileSink
from schedules import topics

from rx_support import Media, MediaServer, make_item, now_ms, signed_manifest, sine_mp3_file, wait_until

RATE = 44100
DURATION_MS = 8000


@pytest.fixture(scope="module")
def eight_s_mp3(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return sine_mp3_file(tmp_path_factory.mktemp("audio"), 8.0, 392)


def test_drifting_sink_alone_runs_off_the_clock(tmp_path: Path) -> None:
    output = FileSink(tmp_path, rate_ppm=5000).open("x", 0, RATE, 1)
    output.write(bytes(2 * RATE))  # one second of samples
    elapsed = output.device_frames()
    output.close()
    assert elapsed == RATE  # all consumed...
    assert output.closed_ms is not None and output.first_sample_ms is not None
    assert output.closed_ms - output.first_sample_ms < 1000  # ... in 995 ms of wall clock


@pytest.mark.parametrize("ppm", [5000, -5000])
def test_player_holds_a_drifting_sink_to_the_system_clock(
    make_config: Callable[..., ReceiverConfig],
    media_server: MediaServer,
    eight_s_mp3: Media,
    signing_key: Any,
    ppm: int,
) -> None:
    # 5,000 ppm (exaggerated so a short test shows it): uncorrected, 8 s would end 40 ms early or late.
    media_server.add(eight_s_mp3)
    config = make_config(media_base_url=media_server.url, sink_rate_ppm=ppm)
    scope = f"rx/{config.rx_id}"
    start = now_ms() + 2000
    agent = Agent(config)
    try:
        agent.handle_message(
            topics.sched(scope),
            signed_manifest(signing_key, scope, 1, [make_item("drift", start, DURATION_MS, eight_s_mp3.ref)]),
        )
        agent.cache.fetch(eight_s_mp3.ref)
        agent.start()
        (finished,) = wait_until(
            lambda: [json.loads(p.payload) for p in agent.outbox.pending() if b"playback.finished" in p.payload],
            timeout=30,
        )
    finally:
        agent.stop()
    (sidecar,) = [json.loads(p.read_text()) for p in Path(config.effective_sink_dir).glob("*.json")]
    assert finished["played_ms"] == DURATION_MS  # all of the content, no more, no less
    expected = abs(ppm) / 1e6 * DURATION_MS / 1000 * RATE  # 1,764 frames
    corrected = sidecar["inserted_frames"] if ppm > 0 else sidecar["dropped_frames"]
    assert expected * 0.5 < corrected < expected * 2, sidecar
    if ppm > 0:
        # The fast device does not finish 40 ms early: the item lasts as long as the clock says.
        # (Only a lower bound: a loaded machine can only make the end later.)
        wall = sidecar["closed_ms"] - sidecar["first_sample_ms"]
        assert wall > DURATION_MS - 15, wall
