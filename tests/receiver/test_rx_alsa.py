"""The ALSA back end through aplay: ALSA's null device plays; a missing card is a fault, never a crash."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from typing import Any

import pytest

from receiver.agent import Agent
from receiver.config import ReceiverConfig
from receiver.sinks import AlsaSink, SinkError
from schedules import topics

from rx_support import Media, MediaServer, make_item, now_ms, signed_manifest, wait_until

pytestmark = pytest.mark.skipif(shutil.which("aplay") is None, reason="alsa-utils (aplay) is not installed")


def test_aplay_plays_into_alsas_null_device() -> None:
    output = AlsaSink("null").open("x", 0, 44100, 1)
    output.write(bytes(2 * 4410) * 3)  # 0.3 s
    output.close()
    assert output.played_ms == pytest.approx(300)


def test_missing_card_cannot_open() -> None:
    with pytest.raises(SinkError, match="hw:9,9"):
        AlsaSink("hw:9,9").open("x", 0, 44100, 1)


def test_agent_reports_no_audio_device(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, sine_mp3: Media, signing_key: Any
) -> None:
    media_server.add(sine_mp3)
    config = make_config(media_base_url=media_server.url, sink="alsa", alsa_device="hw:9,9")
    scope = f"rx/{config.rx_id}"
    agent = Agent(config)
    try:
        agent.handle_message(topics.sched(scope), signed_manifest(
            signing_key, scope, 1, [make_item("no-card", now_ms() + 1500, 1000, sine_mp3.ref)]))
        agent.start()
        failed = wait_until(lambda: [json.loads(p.payload) for p in agent.outbox.pending()
                                     if b"playback.failed" in p.payload], timeout=20)
        faults = [json.loads(p.payload) for p in agent.outbox.pending() if b"no_audio_device" in p.payload]
    finally:
        agent.stop()
    assert failed[0]["item_id"] == "no-card" and "hw:9,9" in failed[0]["reason"]
    assert faults and faults[0]["type"] == "fault.raised"
