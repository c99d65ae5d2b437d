"""Signed commands: validation, replay and forgery refused (also across a restart), emergency pre-emption."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.services import commands as controller_commands
from receiver.agent import Agent
from receiver.config import ReceiverConfig
from schedules import signing, topics
from schedules.commands import TS_TOLERANCE_MS, Command, CommandError, make_command

from rx_support import (
    Media,
    MediaServer,
    content_bytes,
    make_item,
    media_args,
    now_ms,
    outbox_events,
    signed_manifest,
    sine_mp3_file,
    unique,
    wait_until,
)


def _cmd(key: Any, scope: str, action: str, args: dict[str, Any] | None = None, **kw: Any) -> bytes:
    return controller_commands.build(key, scope, action, args, **kw)[1]


@pytest.fixture
def agent(make_config: Callable[..., ReceiverConfig]) -> Iterator[Agent]:
    a = Agent(make_config())
    yield a
    a.stop()


@pytest.fixture(scope="module")
def long_mp3(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return sine_mp3_file(tmp_path_factory.mktemp("audio"), 6.0, 330)


@pytest.fixture(scope="module")
def alarm_mp3(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return sine_mp3_file(tmp_path_factory.mktemp("audio"), 1.0, 880)


# ------------------------------------------------------------------ the body


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"action": "reboot"}, "cmd.unknown_action"),
        ({"nonce": "short"}, "cmd.malformed"),
        ({"ts": "yesterday"}, "cmd.malformed"),
        ({"expires": 0}, "cmd.malformed"),
        ({"args": []}, "cmd.malformed"),
        ({"action": "volume", "args": {"volume": 101}}, "cmd.malformed"),
        ({"action": "emergency", "args": {"volume": 90}}, "cmd.malformed"),
        ({"action": "emergency", "args": {"id": "e", "volume": 90, "media": {"sha256": "x"}}}, "cmd.malformed"),
    ],
)
def test_malformed_bodies_are_refused_with_a_code(change: dict[str, Any], code: str) -> None:
    body = make_command("rx/a", "stop", now_ms=1_000_000).to_body()
    body.update(change)
    with pytest.raises(CommandError) as caught:
        Command.from_body(body)
    assert caught.value.code == code


def test_time_window() -> None:
    command = make_command("rx/a", "resync", now_ms=10_000_000, ttl_ms=60_000)
    command.check_time(10_000_000 + 59_999)
    command.check_time(10_000_000 - TS_TOLERANCE_MS)  # the receiver's clock is behind
    with pytest.raises(CommandError, match="expired"):
        command.check_time(10_000_000 + 60_000)
    with pytest.raises(CommandError) as caught:
        command.check_time(10_000_000 - TS_TOLERANCE_MS - 1)
    assert caught.value.code == "cmd.stale"


# ------------------------------------------------------------------ the agent


def test_replay_is_refused_even_after_a_restart(
    make_config: Callable[..., ReceiverConfig], signing_key: Any
) -> None:
    config = make_config()
    scope = f"rx/{config.rx_id}"
    captured = _cmd(signing_key, scope, "volume", {"volume": 40})
    agent = Agent(config)
    try:
        agent.handle_message(topics.cmd(scope), captured)
        assert agent.volume == 40
        agent.handle_message(topics.cmd(scope), captured)
        (ack,) = outbox_events(agent, "command.ack")
        (refused,) = outbox_events(agent, "command.refused")
    finally:
        agent.stop()
    assert ack["action"] == "volume" and ack["volume"] == 40
    assert refused["code"] == "cmd.replay" and refused["action"] == "volume"
    again = Agent(config)  # after a power cut: the nonce is still known
    try:
        again.handle_message(topics.cmd(scope), captured)
        refused = outbox_events(again, "command.refused")
        assert [r["code"] for r in refused] == ["cmd.replay", "cmd.replay"]
        assert again.volume == 80
    finally:
        again.stop()


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda key, scope: _cmd(signing.generate_private_key(), scope, "stop"), "sig.invalid"),
        (lambda key, scope: _cmd(key, "rx/someone-else", "stop"), "sig.wrong_scope"),
        (lambda key, scope: _cmd(key, scope, "stop", now=now_ms() - TS_TOLERANCE_MS - 60_000), "cmd.stale"),
        (lambda key, scope: _cmd(key, scope, "stop", now=now_ms() - 2000, ttl_ms=1000), "cmd.expired"),
        (
            lambda key, scope: signing.sign(
                key, {**make_command(scope, "stop", now_ms=now_ms()).to_body(), "action": "self-destruct"}
            ),
            "cmd.unknown_action",
        ),
        (lambda key, scope: b"\xff not json", "msg.not_json"),
    ],
)
def test_forged_stale_and_unknown_commands_are_refused(
    agent: Agent, signing_key: Any, make: Callable[[Any, str], bytes], code: str
) -> None:
    scope = f"rx/{agent.rx}"
    agent.handle_message(topics.cmd(scope), make(signing_key, scope))
    (refused,) = outbox_events(agent, "command.refused")
    assert refused["code"] == code and refused["scope"] == scope and refused["reason"]
    assert not outbox_events(agent, "command.ack")
    faults = outbox_events(agent, "fault.raised")
    if code.startswith("sig."):
        assert faults[0]["fault"] == "signature_refused" and faults[0]["kind"] == "command"
    else:
        assert not faults


def test_emergency_preempts_then_the_programme_resumes_where_it_stands(
    make_config: Callable[..., ReceiverConfig],
    media_server: MediaServer,
    long_mp3: Media,
    alarm_mp3: Media,
    signing_key: Any,
) -> None:
    media_server.add(long_mp3)
    media_server.add(alarm_mp3)
    config = make_config(media_base_url=media_server.url)
    scope = f"rx/{config.rx_id}"
    start = now_ms() + 1500
    agent = Agent(config)
    try:
        agent.handle_message(
            topics.sched(scope), signed_manifest(signing_key, scope, 1, [make_item("prog", start, 6000, long_mp3.ref)])
        )
        agent.start()
        wait_until(lambda: outbox_events(agent, "playback.started"), timeout=20)
        emergency_id = unique("storm-")
        agent.handle_message(
            topics.cmd(scope),
            _cmd(signing_key, scope, "emergency", {"id": emergency_id, "media": media_args(alarm_mp3), "volume": 100}),
        )
        wait_until(lambda: len(outbox_events(agent, "playback.finished")) >= 3, timeout=30)
        finished = outbox_events(agent, "playback.finished")
        started = outbox_events(agent, "playback.started")
    finally:
        agent.stop()
    assert [(e["item_id"], e["end_reason"]) for e in finished] == [
        ("prog", "preempted"),
        (emergency_id, "complete"),
        ("prog", "complete"),
    ]
    assert [e["item_id"] for e in started] == ["prog", emergency_id, "prog"]
    assert started[1]["priority"] == "emergency"
    resumed = started[2]
    # Resumed where the schedule stood when the emergency ended, not where it was cut.
    assert resumed["offset_ms"] >= finished[0]["played_ms"] + 900
    assert abs(resumed["actual_start_ms"] - (start + resumed["offset_ms"])) < 500
    sidecars = {p.stem: json.loads(p.read_text()) for p in Path(config.effective_sink_dir).glob("*.json")}
    alarm = next(s for s in sidecars.values() if s["item_id"] == emergency_id)
    assert alarm["volume"] == 100 and content_bytes(alarm) == 44100 * 2


def test_stop_command_ends_the_item_playing(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, long_mp3: Media, signing_key: Any
) -> None:
    media_server.add(long_mp3)
    config = make_config(media_base_url=media_server.url)
    scope = f"rx/{config.rx_id}"
    agent = Agent(config)
    try:
        agent.handle_message(
            topics.sched(scope),
            signed_manifest(signing_key, scope, 1, [make_item("prog", now_ms() + 1000, 6000, long_mp3.ref)]),
        )
        agent.start()
        wait_until(lambda: outbox_events(agent, "playback.started"), timeout=20)
        agent.handle_message(topics.cmd(scope), _cmd(signing_key, scope, "stop"))
        (finished,) = wait_until(lambda: outbox_events(agent, "playback.finished"), timeout=10)
        (ack,) = outbox_events(agent, "command.ack")
    finally:
        agent.stop()
    assert finished["end_reason"] == "stopped_by_command" and finished["played_ms"] < 5000
    assert ack["action"] == "stop" and ack["stopped"] == "prog"

