"""The ``test_tone`` command: a sine at the programme volume, sent signed over the broker to a real receiver;
it pre-empts the programme but never an emergency."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.services import commands as controller_commands
from receiver.agent import Agent
from receiver.config import ReceiverConfig
from schedules import events, topics

from rx_support import (
    SECOND,
    Broker,
    Collector,
    Media,
    MediaServer,
    classify,
    make_item,
    now_ms,
    outbox_events,
    runs,
    signed_conf,
    signed_manifest,
    sine_mp3_file,
    tones,
    unique,
    wait_until,
)


def _recordings(config: ReceiverConfig, prefix: str) -> list[tuple[dict[str, Any], bytes]]:
    found = [(json.loads(p.read_text()), p.with_suffix(".pcm").read_bytes())
             for p in Path(config.effective_sink_dir).glob(f"{prefix}*.json")]
    return sorted(found, key=lambda f: f[0]["first_sample_ms"] or 0)


def _cmd(key: Any, scope: str, action: str, args: dict[str, Any] | None = None) -> bytes:
    return controller_commands.build(key, scope, action, args)[1]


@pytest.fixture(scope="module")
def long_mp3(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return sine_mp3_file(tmp_path_factory.mktemp("audio"), 6.0, 330)


def test_test_tone_over_the_broker_plays_a_sine_at_the_programme_volume(
    make_config: Callable[..., ReceiverConfig], broker: Broker, collector: Callable[[list[str]], Collector],
    signing_key: Any,
) -> None:
    config = make_config(mqtt_url=broker.url)
    rx = config.rx_id
    scope = f"rx/{rx}"
    topic = topics.rx_events(rx)
    out = collector([topic])

    def sent(type_: str) -> list[dict[str, Any]]:
        return [e for e in (events.decode(p) for p in out.on(topic)) if e["type"] == type_]

    agent = Agent(config)
    try:
        agent.start()
        assert agent.wait_connected(10)
        out.publish(topics.conf(rx), signed_conf(signing_key, rx, 1, [], volume=60), retain=True)
        wait_until(lambda: sent(events.CONF_ACCEPTED), timeout=10)
        # Exactly what the controller's cluster page sends, but 2 s instead of 5 to keep the test short.
        out.publish(topics.cmd(scope), _cmd(signing_key, scope, "test_tone", {"duration_s": 2, "frequency_hz": 1000}))
        (finished,) = wait_until(lambda: sent(events.TEST_TONE_FINISHED), timeout=20)
        (ack,) = sent(events.COMMAND_ACK)
        (started,) = sent(events.TEST_TONE_STARTED)
    finally:
        agent.stop()
        out.publish(topics.conf(rx), b"", retain=True)
        out.publish(topics.rx_status(rx), b"", retain=True)
    assert ack["action"] == "test_tone" and ack["duration_s"] == 2 and ack["frequency_hz"] == 1000
    assert started["frequency_hz"] == 1000 and started["volume"] == 60 and started["nonce"] == ack["nonce"]
    assert finished["played_ms"] == 2000 and finished["end_reason"] == "complete"
    ((sidecar, pcm),) = _recordings(config, "test-tone-")
    assert sidecar["volume"] == 60 and len(pcm) - 2 * sidecar["inserted_frames"] + 2 * sidecar["dropped_frames"] \
        == 2 * SECOND
    labels = classify(tones(pcm), (1000,), tolerance=0.02)
    assert labels.count(1000) == len(labels), runs(labels)


def test_test_tone_preempts_the_programme_which_then_resumes(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, long_mp3: Media, signing_key: Any,
) -> None:
    media_server.add(long_mp3)
    config = make_config(media_base_url=media_server.url)
    scope = f"rx/{config.rx_id}"
    start = now_ms() + 1500
    agent = Agent(config)
    try:
        agent.handle_message(topics.sched(scope),
                             signed_manifest(signing_key, scope, 1, [make_item("prog", start, 6000, long_mp3.ref)]))
        agent.start()
        wait_until(lambda: outbox_events(agent, events.PLAYBACK_STARTED), timeout=20)
        time.sleep(0.5)
        agent.handle_message(topics.cmd(scope), _cmd(signing_key, scope, "test_tone",
                                                     {"duration_s": 1, "frequency_hz": 2000}))
        wait_until(lambda: len(outbox_events(agent, events.PLAYBACK_FINISHED)) >= 2, timeout=20)
        finished = outbox_events(agent, events.PLAYBACK_FINISHED)
        (tone_done,) = outbox_events(agent, events.TEST_TONE_FINISHED)
    finally:
        agent.stop()
    assert [(e["item_id"], e["end_reason"]) for e in finished] == [("prog", "preempted"), ("prog", "complete")]
    assert finished[1]["offset_ms"] >= finished[0]["played_ms"] + 1000  # rejoined where the schedule stood
    assert tone_done["played_ms"] == 1000 and tone_done["end_reason"] == "complete"
    ((_sidecar, pcm),) = _recordings(config, "test-tone-")
    labels = classify(tones(pcm), (2000,), tolerance=0.02)
    assert labels.count(2000) == len(labels) == 10, runs(labels)


def test_test_tone_is_refused_while_an_emergency_plays(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, long_mp3: Media, signing_key: Any,
) -> None:
    media_server.add(long_mp3)
    config = make_config(media_base_url=media_server.url)
    scope = f"rx/{config.rx_id}"
    agent = Agent(config)
    try:
        agent.start()
        storm = unique("storm-")
        media = {"sha256": long_mp3.ref.sha256, "path": long_mp3.ref.path, "bytes": long_mp3.ref.bytes,
                 "duration_ms": long_mp3.ref.duration_ms}
        agent.handle_message(topics.cmd(scope), _cmd(signing_key, scope, "emergency",
                                                     {"id": storm, "media": media, "volume": 100}))
        wait_until(lambda: outbox_events(agent, events.PLAYBACK_STARTED), timeout=20)
        agent.handle_message(topics.cmd(scope), _cmd(signing_key, scope, "test_tone"))
        (refused,) = outbox_events(agent, events.COMMAND_REFUSED)
        agent.handle_message(topics.cmd(scope), _cmd(signing_key, scope, "stop"))
        wait_until(lambda: outbox_events(agent, events.PLAYBACK_FINISHED), timeout=20)
        assert not outbox_events(agent, events.TEST_TONE_STARTED)
        assert not outbox_events(agent, events.TEST_TONE_FINISHED)
    finally:
        agent.stop()
    assert refused["action"] == "test_tone" and refused["code"] == "cmd.busy" and storm in refused["reason"]
    assert not _recordings(config, "test-tone-")


def test_bad_test_tone_arguments_are_refused_with_a_reason(
    make_config: Callable[..., ReceiverConfig], signing_key: Any
) -> None:
    from schedules import signing
    from schedules.commands import make_command

    config = make_config()
    scope = f"rx/{config.rx_id}"
    agent = Agent(config)
    try:
        body = make_command(scope, "test_tone", now_ms=now_ms()).to_body()
        body["args"] = {"duration_s": 60, "frequency_hz": 1000}  # signed as is: the receiver checks it too
        agent.handle_message(topics.cmd(scope), signing.sign(signing_key, body))
        (refused,) = outbox_events(agent, events.COMMAND_REFUSED)
        assert not outbox_events(agent, events.COMMAND_ACK)
    finally:
        agent.stop()
    assert refused["code"] == "cmd.malformed" and "duration_s" in refused["reason"]
