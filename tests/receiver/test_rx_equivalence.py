"""The real agent and a simulated receiver give the same verdict on every message.

Both go through :class:`receiver.holdings.Holdings` and
:class:`receiver.gate.CommandGate`; this test feeds one sequence of genuine,
forged, misdirected, malformed, replayed, stale and rolled-back messages to a
real :class:`~receiver.agent.Agent` and to a :class:`~receiver.swarm.SimReceiver`
of the same id, and requires the same reports in the same order. Neither is
connected: the agent keeps its events in its outbox, the simulated receiver
hands them to the swarm's ``on_event`` hook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from receiver.agent import Agent
from receiver.config import ReceiverConfig
from receiver.swarm import SimReceiver, Swarm
from schedules import signing, topics
from schedules.commands import alert_body, make_command
from schedules.conf import ReceiverConf

from rx_support import Media, make_item, media_args, now_ms, outbox_events, signed_conf, signed_manifest, unique

# What a verdict is: the report's type and the fields that say what was decided and why.
VERDICT_FIELDS = ("fault", "kind", "code", "scope", "action", "nonce", "version", "held_version", "items", "scopes",
                  "item_id", "joined", "already")


def _verdicts(reported: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The verdicts among the reports (playback is simulated by one and not started on the other: left out)."""
    return [(e["type"], *(e.get(f) for f in VERDICT_FIELDS)) for e in reported
            if not e["type"].startswith("playback.")]


def _messages(key: Any, rx: str, media: Media) -> list[tuple[str, str, bytes]]:
    """``(label, topic, payload)`` for every case, in the order they are fed."""
    area = f"area/{unique()}"
    other_area = f"area/{unique()}"
    forged = signing.generate_private_key()
    start = now_ms() + 3600_000
    items = [make_item("news", start, 3000, media.ref), make_item("music", start + 10_000, 3000, media.ref)]
    now = now_ms()

    def command(action: str, args: dict[str, Any] | None = None, *, at: int = now, ttl_ms: int = 600_000,
                scope: str = area, signer: Any = key) -> bytes:
        return signing.sign(signer, make_command(scope, action, args, now_ms=at, ttl_ms=ttl_ms).to_body())

    volume = command("volume", {"volume": 55})
    media_ref = media_args(media)

    def alert(action: str, *, at: int = now, ttl_ms: int = 600_000, signer: Any = key) -> tuple[bytes, bytes]:
        """``(command payload, alert state payload)`` of one alert."""
        made = make_command(area, action, {"id": unique("alert-"), "media": media_ref, "volume": 90}, now_ms=at,
                            ttl_ms=ttl_ms)
        return signing.sign(signer, made.to_body()), signing.sign(signer, alert_body(made))

    live_cmd, live_state = alert("emergency")
    drill_cmd, drill_state = alert("drill")
    _old_cmd, joined_state = alert("emergency", at=now - 60_000)
    _expired_cmd, expired_state = alert("emergency", at=now - 120_000, ttl_ms=60_000)
    _forged_cmd, forged_state = alert("emergency", signer=forged)
    malformed = dict(make_command(area, "stop", now_ms=now).to_body(), action="self-destruct")
    misdirected_manifest = signed_manifest(key, other_area, 9, items)
    nested = b'{"v": 1, "body": ' + b"[" * 5000 + b"]" * 5000 + b', "sig": ""}'
    return [
        ("conf v2", topics.conf(rx), signed_conf(key, rx, 2, [area])),
        ("conf rolled back to v1", topics.conf(rx), signed_conf(key, rx, 1, [area, other_area])),
        ("conf v2 again", topics.conf(rx), signed_conf(key, rx, 2, [area])),
        ("forged conf", topics.conf(rx), signed_conf(forged, rx, 3, [other_area])),
        ("conf signed for another receiver", topics.conf(rx), signed_conf(key, "rx-other", 4, [other_area])),
        ("conf naming another receiver", topics.conf(rx),
         signing.sign(key, dict(ReceiverConf(rx, 4, [other_area]).to_body(), rx="rx-other"))),
        ("conf with a bad volume", topics.conf(rx),
         signing.sign(key, dict(ReceiverConf(rx, 4, [other_area]).to_body(), volume="loud"))),
        ("conf that is not JSON", topics.conf(rx), b"\xff not json"),
        ("manifest v1", topics.sched(area), signed_manifest(key, area, 1, items)),
        ("manifest v1 again", topics.sched(area), signed_manifest(key, area, 1, items)),
        ("manifest v3", topics.sched(area), signed_manifest(key, area, 3, items[:1])),
        ("manifest rolled back to v2", topics.sched(area), signed_manifest(key, area, 2, items)),
        ("forged manifest", topics.sched(area), signed_manifest(forged, area, 4, items)),
        ("manifest signed for another scope", topics.sched(area), misdirected_manifest),
        ("manifest of a scope not followed", topics.sched(other_area), misdirected_manifest),
        ("manifest with bad items", topics.sched(area),
         signing.sign(key, {"kind": "manifest", "scope": area, "version": 5, "items": [{"id": 1}]})),
        ("manifest nested too deeply", topics.sched(area), nested),
        ("own-scope manifest", topics.sched(f"rx/{rx}"), signed_manifest(key, f"rx/{rx}", 1, items[1:])),
        ("volume command", topics.cmd(area), volume),
        ("volume command replayed", topics.cmd(area), volume),
        ("stale command", topics.cmd(area), command("stop", at=now - 3600_000, ttl_ms=7200_000)),
        ("expired command", topics.cmd(area), command("stop", at=now - 20_000, ttl_ms=10_000)),
        ("forged command", topics.cmd(area), command("stop", signer=forged)),
        ("command signed for another scope", topics.cmd(area), command("stop", scope=other_area)),
        ("command on a scope not followed", topics.cmd(other_area), command("stop", scope=other_area)),
        ("unknown action", topics.cmd(area), signing.sign(key, malformed)),
        ("command nested too deeply", topics.cmd(area), nested),
        ("stop command", topics.cmd(area), command("stop")),
        ("resync command", topics.cmd(area), command("resync")),
        ("emergency command", topics.cmd(area), live_cmd),
        ("its alert state", topics.alert(area), live_state),
        ("drill state before its command", topics.alert(area), drill_state),
        ("the drill's command", topics.cmd(area), drill_cmd),
        ("alert state of an alert under way", topics.alert(area), joined_state),
        ("the same alert state again", topics.alert(area), joined_state),
        ("expired alert state", topics.alert(area), expired_state),
        ("forged alert state", topics.alert(area), forged_state),
        ("a command where an alert state belongs", topics.alert(area), volume),
        ("cleared alert state", topics.alert(area), b""),
        ("conf v5 drops the area", topics.conf(rx), signed_conf(key, rx, 5, [other_area])),
        ("manifest of the dropped area", topics.sched(area), signed_manifest(key, area, 6, items)),
        ("command on the dropped area", topics.cmd(area), command("stop")),
        ("manifest of the new area", topics.sched(other_area), misdirected_manifest),
    ]


def test_agent_and_simulated_receiver_give_identical_verdicts(
    make_config: Callable[..., ReceiverConfig], signing_key: Any, public_key_text: str, sine_mp3: Media
) -> None:
    config = make_config()
    rx = config.rx_id
    agent = Agent(config)
    seen: list[dict[str, Any]] = []
    swarm = Swarm(1, "127.0.0.1", 1, public_key_text, on_event=lambda _rx, event: seen.append(event))
    sim = SimReceiver(rx, swarm, [])
    sim.pc = swarm.receivers[0].pc  # an unconnected client: publishes wait, events reach the hook
    assert sim.pc is not None
    steps: list[tuple[str, list[tuple[Any, ...]], list[tuple[Any, ...]]]] = []
    try:
        for label, topic, payload in _messages(signing_key, rx, sine_mp3):
            before_agent, before_sim = len(outbox_events(agent)), len(seen)
            agent.handle_message(topic, payload)
            sim.on_message(sim.pc, topic, payload)
            steps.append((label, _verdicts(outbox_events(agent)[before_agent:]), _verdicts(seen[before_sim:])))
        held_agent = {s: m.version for s, m in agent.manifests.items()}
        held_sim = {s: m.version for s, m in sim.manifests.items()}
        conf_versions = (agent.conf.version if agent.conf else None, sim.conf.version if sim.conf else None)
    finally:
        agent.stop()
        swarm.pool.stop()
    for label, by_agent, by_sim in steps:
        assert by_agent == by_sim, f"{label}: agent {by_agent} != simulated {by_sim}"
    by_label = {label: by_agent for label, by_agent, _ in steps}
    # The sequence really exercised every rule (a verdict that is always "nothing" would pass the comparison).
    codes = {v[3] for verdicts in by_label.values() for v in verdicts} | {
        v[1] for verdicts in by_label.values() for v in verdicts}
    for expected in ("conf.rollback", "conf.malformed", "manifest.rollback", "manifest.malformed", "msg.malformed",
                     "cmd.replay", "cmd.stale", "cmd.expired", "signature_refused"):
        assert expected in codes, (expected, by_label)
    assert by_label["conf v2 again"] == [] and by_label["manifest v1 again"] == []
    assert by_label["manifest of a scope not followed"] == [] and by_label["command on a scope not followed"] == []
    assert [v[0] for v in by_label["forged manifest"]] == ["manifest.refused", "fault.raised"]
    assert [v[0] for v in by_label["volume command"]] == ["command.ack"]
    assert by_label["manifest of the dropped area"] == [] and by_label["command on the dropped area"] == []
    assert by_label["its alert state"] == [] and by_label["the same alert state again"] == []
    joined, already = 1 + VERDICT_FIELDS.index("joined"), 1 + VERDICT_FIELDS.index("already")
    assert [(v[0], v[joined]) for v in by_label["alert state of an alert under way"]] == [("command.ack", True)]
    assert [(v[0], v[already]) for v in by_label["the drill's command"]] == [("command.ack", True)]  # plays once
    assert [v[0] for v in by_label["manifest of the new area"]] == ["manifest.accepted"]
    assert held_agent == held_sim and conf_versions == (5, 5)


def test_simulated_receiver_refuses_a_conf_rollback(public_key_text: str, signing_key: Any) -> None:
    """The drift this design removed: the simulator used to ignore an older conf silently."""
    seen: list[dict[str, Any]] = []
    swarm = Swarm(1, "127.0.0.1", 1, public_key_text, on_event=lambda _rx, event: seen.append(event))
    sim = swarm.receivers[0]
    assert sim.pc is not None
    try:
        sim.on_message(sim.pc, topics.conf(sim.rx), signed_conf(signing_key, sim.rx, 2, []))
        sim.on_message(sim.pc, topics.conf(sim.rx), signed_conf(signing_key, sim.rx, 1, []))
    finally:
        swarm.pool.stop()
    assert [(e["type"], e.get("code")) for e in seen] == [("conf.accepted", None), ("fault.raised", "conf.rollback")]
