"""Alerts on a real agent: live and drill told apart, the retained alert state joined once, cleared, refused.

The agent plays into the file sink; every payload is signed with the test key
(the controller's own code builds the commands). The receiver joins an alert
that started before it had it only through the retained, signed, expiring
alert state; an expired, forged or misdirected state plays nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from receiver.agent import Agent
from receiver.config import ReceiverConfig
from schedules import signing, topics
from schedules.commands import Command, CommandError, alert_body, command_of_alert, make_command

from rx_support import (
    Media,
    MediaServer,
    make_item,
    media_args,
    now_ms,
    outbox_events,
    signed_manifest,
    sine_mp3_file,
    unique,
    wait_until,
)


@pytest.fixture(scope="module")
def long_mp3(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return sine_mp3_file(tmp_path_factory.mktemp("audio"), 6.0, 330)


@pytest.fixture(scope="module")
def alarm_mp3(tmp_path_factory: pytest.TempPathFactory) -> Media:
    return sine_mp3_file(tmp_path_factory.mktemp("audio"), 4.0, 880)


@pytest.fixture(scope="module")
def siren_mp3(tmp_path_factory: pytest.TempPathFactory) -> Media:
    """Long enough that every receiver is still playing it when it is stopped, however loaded the machine."""
    return sine_mp3_file(tmp_path_factory.mktemp("audio"), 30.0, 660)



def _alert(key: Any, scope: str, action: str, media: Media, *, at: int | None = None,
           ttl_ms: int = 60_000) -> tuple[Command, bytes, bytes]:
    """``(command, command payload, alert state payload)`` of one alert."""
    command = make_command(scope, action, {"id": unique("alert-"), "media": media_args(media), "volume": 90},
                           now_ms=now_ms() if at is None else at, ttl_ms=ttl_ms)
    return command, signing.sign(key, command.to_body()), signing.sign(key, alert_body(command))


def _sidecars(config: ReceiverConfig) -> dict[str, dict[str, Any]]:
    return {json.loads(p.read_text())["item_id"]: json.loads(p.read_text())
            for p in Path(config.effective_sink_dir).glob("*.json")}


@pytest.fixture
def started_agent(make_config: Callable[..., ReceiverConfig], media_server: MediaServer, long_mp3: Media,
                  alarm_mp3: Media) -> Iterator[Callable[[], Agent]]:
    media_server.add(long_mp3)
    media_server.add(alarm_mp3)
    agents: list[Agent] = []

    def make() -> Agent:
        agent = Agent(make_config(media_base_url=media_server.url))
        agent.start()
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop()


def test_the_alert_body_round_trips_and_refuses_what_is_not_an_alert(signing_key: Any, alarm_mp3: Media) -> None:
    command, _payload, _state = _alert(signing_key, "area/x", "drill", alarm_mp3)
    assert command_of_alert(alert_body(command)) == command and command.mode == "drill"
    stop = make_command("area/x", "stop", now_ms=now_ms())
    with pytest.raises(ValueError):
        alert_body(stop)
    with pytest.raises(CommandError):
        command_of_alert({"kind": "alert", "scope": "area/x", "command": stop.to_body()})
    with pytest.raises(CommandError):  # an alert of another scope inside this scope's state
        command_of_alert({"kind": "alert", "scope": "area/y", "command": command.to_body()})
    with pytest.raises(CommandError):
        make_command("area/x", "emergency", {"id": "a", "url": "file:///etc/passwd", "duration_ms": 1000,
                                              "volume": 80}, now_ms=now_ms())
    with pytest.raises(CommandError):
        make_command("area/x", "drill", {"id": "a", "volume": 80}, now_ms=now_ms())


def test_drill_and_live_are_told_apart_in_events_and_sink(
    started_agent: Callable[[], Agent], signing_key: Any, alarm_mp3: Media
) -> None:
    agent = started_agent()
    scope = f"rx/{agent.rx}"
    drill, drill_payload, _ = _alert(signing_key, scope, "drill", alarm_mp3)
    agent.handle_message(topics.cmd(scope), drill_payload)
    wait_until(lambda: outbox_events(agent, "playback.finished"), timeout=30)
    live, live_payload, _ = _alert(signing_key, scope, "emergency", alarm_mp3)
    agent.handle_message(topics.cmd(scope), live_payload)
    wait_until(lambda: len(outbox_events(agent, "playback.finished")) >= 2, timeout=30)
    started = {e["item_id"]: e for e in outbox_events(agent, "playback.started")}
    finished = {e["item_id"]: e for e in outbox_events(agent, "playback.finished")}
    drill_id, live_id = drill.args["id"], live.args["id"]
    assert started[drill_id]["mode"] == "drill" and finished[drill_id]["mode"] == "drill"
    assert started[live_id]["mode"] == "live" and finished[live_id]["mode"] == "live"
    assert started[drill_id]["priority"] == started[live_id]["priority"] == "emergency"
    sidecars = _sidecars(agent.config)
    assert sidecars[drill_id]["tags"] == {"priority": "emergency", "mode": "drill"}
    assert sidecars[live_id]["tags"] == {"priority": "emergency", "mode": "live"}
    assert sidecars[live_id]["volume"] == 90


def test_a_receiver_joins_a_running_alert_from_its_state_once(
    started_agent: Callable[[], Agent], signing_key: Any, alarm_mp3: Media
) -> None:
    agent = started_agent()
    scope = f"rx/{agent.rx}"
    agent.handle_message(topics.sched(scope), signed_manifest(signing_key, scope, 1, []))  # the media server is up
    wait_until(lambda: outbox_events(agent, "manifest.accepted"), timeout=10)
    command, _payload, state = _alert(signing_key, scope, "emergency", alarm_mp3, at=now_ms() - 1500)
    agent.handle_message(topics.alert(scope), state)
    agent.handle_message(topics.alert(scope), state)  # the retained state again (a reconnect): no second play
    (started,) = wait_until(lambda: outbox_events(agent, "playback.started"), timeout=20)
    (finished,) = wait_until(lambda: outbox_events(agent, "playback.finished"), timeout=20)
    acks = outbox_events(agent, "command.ack")
    assert [(a["action"], a["item_id"], a.get("joined")) for a in acks] == [("emergency", command.args["id"], True)]
    assert started["offset_ms"] >= 1500, started  # joined where it stands, not from its beginning
    assert finished["end_reason"] in ("complete", "media_end") and finished["played_ms"] <= 4000 - 1500
    assert not outbox_events(agent, "command.refused")


def test_the_command_after_its_state_or_the_state_after_its_command_plays_once(
    started_agent: Callable[[], Agent], signing_key: Any, alarm_mp3: Media
) -> None:
    agent = started_agent()
    scope = f"rx/{agent.rx}"
    command, payload, state = _alert(signing_key, scope, "emergency", alarm_mp3)
    agent.handle_message(topics.cmd(scope), payload)
    agent.handle_message(topics.alert(scope), state)
    wait_until(lambda: outbox_events(agent, "playback.finished"), timeout=30)
    agent.handle_message(topics.alert(scope), state)
    assert len(outbox_events(agent, "playback.started")) == 1
    (ack,) = outbox_events(agent, "command.ack")
    assert ack["item_id"] == command.args["id"] and "joined" not in ack


def test_clearing_the_state_ends_the_alert_and_the_programme_resumes(
    started_agent: Callable[[], Agent], signing_key: Any, long_mp3: Media, alarm_mp3: Media
) -> None:
    agent = started_agent()
    scope = f"rx/{agent.rx}"
    start = now_ms() + 1000
    agent.handle_message(topics.sched(scope),
                         signed_manifest(signing_key, scope, 1, [make_item("prog", start, 6000, long_mp3.ref)]))
    wait_until(lambda: outbox_events(agent, "playback.started"), timeout=20)
    command, payload, state = _alert(signing_key, scope, "emergency", alarm_mp3)
    agent.handle_message(topics.cmd(scope), payload)
    agent.handle_message(topics.alert(scope), state)
    wait_until(lambda: len(outbox_events(agent, "playback.started")) >= 2, timeout=20)
    cleared_ms = now_ms()
    agent.handle_message(topics.alert(scope), b"")  # the controller cleared it: stopped everywhere
    wait_until(lambda: len(outbox_events(agent, "playback.finished")) >= 2, timeout=10)
    finished = outbox_events(agent, "playback.finished")
    assert [(e["item_id"], e["end_reason"]) for e in finished] == [
        ("prog", "preempted"), (command.args["id"], "stopped_by_command")]
    assert finished[1]["ts"] - cleared_ms < 1000  # silent within a second
    wait_until(lambda: len(outbox_events(agent, "playback.started")) >= 3, timeout=10)  # the programme again
    assert outbox_events(agent, "playback.started")[2]["item_id"] == "prog"


def test_expired_forged_and_misdirected_alert_states_play_nothing(
    started_agent: Callable[[], Agent], signing_key: Any, alarm_mp3: Media
) -> None:
    agent = started_agent()
    scope = f"rx/{agent.rx}"
    _expired, _payload, expired_state = _alert(signing_key, scope, "emergency", alarm_mp3, at=now_ms() - 120_000,
                                               ttl_ms=60_000)
    _forged, _payload, forged_state = _alert(signing.generate_private_key(), scope, "emergency", alarm_mp3)
    _other, _payload, other_state = _alert(signing_key, "area/elsewhere", "emergency", alarm_mp3)
    _command, command_payload, _state = _alert(signing_key, scope, "emergency", alarm_mp3)
    agent.handle_message(topics.alert(scope), expired_state)
    agent.handle_message(topics.alert(scope), forged_state)
    agent.handle_message(topics.alert(scope), other_state)  # signed for another scope, arrived on this one
    agent.handle_message(topics.alert("area/elsewhere"), other_state)  # a scope it does not follow: ignored
    agent.handle_message(topics.alert(scope), command_payload)  # a command is not an alert state
    refused = outbox_events(agent, "command.refused")
    faults = outbox_events(agent, "fault.raised")
    assert [r["code"] for r in refused] == ["cmd.expired", "sig.invalid", "sig.wrong_scope", "sig.wrong_kind"], refused
    assert [f["fault"] for f in faults] == ["signature_refused"] * 3
    assert refused[0]["action"] == "emergency" and refused[0]["nonce"] == _expired.nonce
    assert not outbox_events(agent, "command.ack") and not outbox_events(agent, "playback.started")


def test_a_receiver_that_connects_during_an_alert_joins_it_through_the_deploy_broker(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, alarm_mp3: Media, signing_key: Any,
    tmp_path: Path,
) -> None:
    """The retained state through Mosquitto with the deploy ACL: the controller may write it, a receiver read it."""
    from test_rx_hardening import CTL_PW, RX_PW, Client, DeployBroker

    media_server.add(alarm_mp3)
    (tmp_path / "broker").mkdir()
    broker = DeployBroker(tmp_path / "broker")
    controller = Client(broker.port, "loaxa-controller", CTL_PW, client_id="loaxa-controller",
                        subscribe=topics.rx_events("rx-1"))
    scope = "rx/rx-1"
    command, _payload, state = _alert(signing_key, scope, "emergency", alarm_mp3, at=now_ms() - 1000)
    agent = Agent(make_config(rx_id="rx-1", mqtt_url=broker.url("rx-1", RX_PW), media_base_url=media_server.url))

    def reported(type_: str) -> list[dict[str, Any]]:  # what reached the controller through the broker
        return [e for e in (json.loads(p) for _t, p in list(controller.messages)) if e["type"] == type_]

    try:
        assert controller.subscribed.wait(10)
        controller.publish(topics.alert(scope), state, retain=True)
        agent.start()  # connects after the alert began
        (started,) = wait_until(lambda: reported("playback.started"), timeout=20)
        wait_until(lambda: reported("playback.finished"), timeout=20)
        controller.publish(topics.alert(scope), b"", retain=True)  # it ended: cleared
    finally:
        agent.stop()
        controller.close()
        broker.stop()
    assert started["item_id"] == command.args["id"] and started["mode"] == "live" and started["offset_ms"] >= 1000
    (ack,) = reported("command.ack")
    assert ack["joined"] is True


def test_controller_alert_reaches_its_targets_only_joins_late_comers_and_stops_everywhere(
    make_config: Callable[..., ReceiverConfig], media_server: MediaServer, broker: Any, collector: Any,
    long_mp3: Media, siren_mp3: Media, signing_key: Any,
) -> None:
    """The controller's own alert code against real receivers through the session's Mosquitto."""
    from controller.services import alerts

    media_server.add(long_mp3)
    media_server.add(siren_mp3)
    configs = {name: make_config(mqtt_url=broker.url, media_base_url=media_server.url)
               for name in ("a", "b", "late", "after", "other")}
    ids = {name: c.rx_id for name, c in configs.items()}
    wire = collector([topics.rx_events(rx) for rx in ids.values()])

    def reported(name: str, type_: str) -> list[dict[str, Any]]:
        return [e for e in (json.loads(p) for p in wire.on(topics.rx_events(ids[name]))) if e["type"] == type_]

    agents = {name: Agent(configs[name]) for name in ("a", "b", "other")}
    targets = [f"rx/{ids[n]}" for n in ("a", "b", "late", "after")]
    alert_id = unique("storm-")
    try:
        start = now_ms() + 1500
        for name in ("a", "other"):  # both are playing the programme when the alert comes
            scope = f"rx/{ids[name]}"
            wire.publish(topics.sched(scope), signed_manifest(signing_key, scope, 1,
                                                              [make_item("prog", start, 6000, long_mp3.ref)]), True)
        for agent in agents.values():
            agent.start()
        wait_until(lambda: reported("a", "playback.started") and reported("other", "playback.started"), timeout=20)
        alerts.broadcast(wire.publish, signing_key, targets, "emergency",
                         {"id": alert_id, "media": media_args(siren_mp3), "volume": 95}, duration_ms=30_000)
        wait_until(lambda: len(reported("a", "playback.started")) >= 2, timeout=20)
        agents["late"] = Agent(configs["late"])
        agents["late"].start()  # comes online during the alert
        (late,) = wait_until(lambda: reported("late", "playback.started"), timeout=20)
        ended_ms = now_ms()
        alerts.end(wire.publish, signing_key, targets, alert_id)
        wait_until(lambda: all(any(e["item_id"] == alert_id for e in reported(n, "playback.finished"))
                               for n in ("a", "b", "late")), timeout=10)
        agents["after"] = Agent(configs["after"])
        agents["after"].start()  # comes online after it ended
        assert agents["after"].wait_connected(10)
        wait_until(lambda: len(reported("other", "playback.finished")) >= 1, timeout=20)
        time.sleep(1.5)  # long enough for a stale alert state to have been played, were there one
    finally:
        for agent in agents.values():
            agent.stop()
        for scope in targets + [f"rx/{ids['other']}"]:
            wire.publish(topics.alert(scope), b"", True)
            wire.publish(topics.sched(scope), b"", True)
    for name in ("a", "b", "late"):
        alert_plays = [e for e in reported(name, "playback.finished") if e["item_id"] == alert_id]
        assert [e["end_reason"] for e in alert_plays] == ["stopped_by_command"], (name, alert_plays)
        assert alert_plays[0]["ts"] - ended_ms < 1000  # silent within a second of the stop
    assert [e["item_id"] for e in reported("a", "playback.finished")][:1] == ["prog"]  # pre-empted first
    assert reported("a", "playback.finished")[0]["end_reason"] == "preempted"
    assert late["offset_ms"] > 0 and late["mode"] == "live"
    assert [e["item_id"] for e in reported("other", "playback.started")] == ["prog"]  # not a target: untouched
    assert reported("other", "playback.finished")[0]["end_reason"] == "complete"
    assert not reported("after", "playback.started")  # the alert had ended: nothing stale plays
