"""The agent's message handler, driven directly with signed payloads (no broker needed)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from receiver.agent import Agent
from receiver.config import ReceiverConfig
from schedules import signing, topics

from rx_support import Media, make_item, now_ms, outbox_events, signed_conf, signed_manifest, unique


@pytest.fixture
def agent(make_config: Callable[..., ReceiverConfig]) -> Iterator[Agent]:
    a = Agent(make_config())
    yield a
    a.stop()


def _types(agent: Agent) -> list[str]:
    return [e["type"] for e in outbox_events(agent)]


def _items(media: Media, n: int = 1) -> list[Any]:
    start = now_ms() + 3600_000
    return [make_item(f"item-{i}", start + i * 10_000, 3000, media.ref) for i in range(n)]


def test_conf_then_manifest_accepted(agent: Agent, signing_key: Any, sine_mp3: Media) -> None:
    area = f"area/{unique()}"
    agent.handle_message(topics.conf(agent.rx), signed_conf(signing_key, agent.rx, 1, [area]))
    assert agent.conf is not None and agent.conf.scopes == [area]
    assert agent.scopes() == [area, f"rx/{agent.rx}"]
    agent.handle_message(topics.sched(area), signed_manifest(signing_key, area, 3, _items(sine_mp3, 2)))
    assert agent.manifests[area].version == 3
    accepted = outbox_events(agent)[-1]
    assert accepted["type"] == "manifest.accepted"
    assert (accepted["scope"], accepted["version"], accepted["items"]) == (area, 3, 2)
    assert [e["type"] for e in outbox_events(agent)] == ["conf.accepted", "manifest.accepted"]
    assert (agent.state_dir / "manifests" / f"{area.replace('/', '%2F')}.json").exists()
    # The same version again (a retained message re-delivered) changes nothing.
    agent.handle_message(topics.sched(area), signed_manifest(signing_key, area, 3, _items(sine_mp3, 2)))
    assert len(outbox_events(agent)) == 2


def test_bad_signature_is_refused_and_last_good_kept(agent: Agent, signing_key: Any, sine_mp3: Media) -> None:
    scope = f"rx/{agent.rx}"
    good = signed_manifest(signing_key, scope, 1, _items(sine_mp3))
    agent.handle_message(topics.sched(scope), good)
    assert agent.manifests[scope].version == 1

    forged_key = signing.generate_private_key()
    agent.handle_message(topics.sched(scope), signed_manifest(forged_key, scope, 2, _items(sine_mp3, 3)))
    envelope = json.loads(signed_manifest(signing_key, scope, 3, _items(sine_mp3)))
    envelope["body"]["items"][0]["start_ms"] += 1  # tampered after signing
    agent.handle_message(topics.sched(scope), signing.canonical_json(envelope))

    assert agent.manifests[scope].version == 1
    assert len(agent.manifests[scope].items) == 1
    events = outbox_events(agent)
    assert [e["type"] for e in events] == [
        "manifest.accepted",
        "manifest.refused",
        "fault.raised",
        "manifest.refused",
        "fault.raised",
    ]
    refused = events[1]
    assert refused["scope"] == scope and refused["code"] == "sig.invalid" and refused["reason"]
    assert refused["held_version"] == 1
    assert events[2]["fault"] == "signature_refused" and events[2]["code"] == "sig.invalid"
    # The stored copy is still the good one.
    assert (agent.state_dir / "manifests" / f"rx%2F{agent.rx}.json").read_bytes() == good


def test_older_version_is_refused_as_rollback(agent: Agent, signing_key: Any, sine_mp3: Media) -> None:
    scope = f"rx/{agent.rx}"
    agent.handle_message(topics.sched(scope), signed_manifest(signing_key, scope, 5, _items(sine_mp3)))
    agent.handle_message(topics.sched(scope), signed_manifest(signing_key, scope, 4, _items(sine_mp3, 2)))
    assert agent.manifests[scope].version == 5
    refused = outbox_events(agent)[-1]
    assert refused["type"] == "manifest.refused"
    assert refused["code"] == "manifest.rollback"
    assert "4" in refused["reason"] and "5" in refused["reason"]
    assert "fault.raised" not in _types(agent)


def test_manifest_replayed_onto_another_scope_is_refused(agent: Agent, signing_key: Any, sine_mp3: Media) -> None:
    area_a, area_b = f"area/{unique()}", f"area/{unique()}"
    agent.handle_message(topics.conf(agent.rx), signed_conf(signing_key, agent.rx, 1, [area_a, area_b]))
    agent.handle_message(topics.sched(area_b), signed_manifest(signing_key, area_a, 1, _items(sine_mp3)))
    assert area_b not in agent.manifests
    events = outbox_events(agent)
    assert events[-2]["type"] == "manifest.refused" and events[-2]["code"] == "sig.wrong_scope"
    assert events[-1]["type"] == "fault.raised" and events[-1]["fault"] == "signature_refused"


def test_malformed_payloads_never_raise(agent: Agent, signing_key: Any) -> None:
    scope = f"rx/{agent.rx}"
    agent.handle_message(topics.sched(scope), b"\xff\xfe not json")
    agent.handle_message(topics.sched(scope), b'{"v": 1, "body": {"kind": "manifest"}}')
    body = {"kind": "manifest", "scope": scope, "version": 1, "items": "nope"}
    agent.handle_message(topics.sched(scope), signing.sign(signing_key, body))
    agent.handle_message("some/other/topic", b"x")
    agent.handle_message(topics.conf(agent.rx), b"{}")
    codes = [(e["type"], e.get("code")) for e in outbox_events(agent)]
    assert codes[:4] == [
        ("manifest.refused", "msg.not_json"),
        ("manifest.refused", "sig.invalid"),  # no signature at all
        ("fault.raised", "sig.invalid"),
        ("manifest.refused", "manifest.malformed"),
    ]
    assert codes[4] == ("fault.raised", "msg.malformed")
    assert outbox_events(agent)[4]["fault"] == "conf_refused"
    assert agent.manifests == {}


def test_manifest_for_a_scope_not_followed_is_ignored(agent: Agent, signing_key: Any, sine_mp3: Media) -> None:
    other = f"area/{unique()}"
    agent.handle_message(topics.sched(other), signed_manifest(signing_key, other, 1, _items(sine_mp3)))
    assert agent.manifests == {} and outbox_events(agent) == []


def test_conf_changes_scopes_and_refuses_rollback(agent: Agent, signing_key: Any, sine_mp3: Media) -> None:
    area_a, area_b = f"area/{unique()}", f"area/{unique()}"
    agent.handle_message(topics.conf(agent.rx), signed_conf(signing_key, agent.rx, 2, [area_a]))
    agent.handle_message(topics.sched(area_a), signed_manifest(signing_key, area_a, 1, _items(sine_mp3)))
    agent.handle_message(topics.conf(agent.rx), signed_conf(signing_key, agent.rx, 3, [area_b]))
    assert area_a not in agent.manifests
    assert agent.scopes() == [area_b, f"rx/{agent.rx}"]
    agent.handle_message(topics.conf(agent.rx), signed_conf(signing_key, agent.rx, 1, [area_a]))
    assert agent.conf is not None and agent.conf.version == 3
    last = outbox_events(agent)[-1]
    assert (last["type"], last["fault"], last["code"]) == ("fault.raised", "conf_refused", "conf.rollback")
    other_rx = signed_conf(signing_key, "someone-else", 9, [area_a])
    agent.handle_message(topics.conf(agent.rx), other_rx)
    assert outbox_events(agent)[-1]["code"] == "sig.wrong_scope"
    assert agent.conf.version == 3


def test_state_survives_a_restart(
    make_config: Callable[..., ReceiverConfig], signing_key: Any, sine_mp3: Media
) -> None:
    config = make_config()
    area = f"area/{unique()}"
    first = Agent(config)
    try:
        first.handle_message(topics.conf(first.rx), signed_conf(signing_key, first.rx, 4, [area]))
        first.handle_message(topics.sched(area), signed_manifest(signing_key, area, 7, _items(sine_mp3)))
    finally:
        first.stop()
    second = Agent(config)
    try:
        assert second.conf is not None and second.conf.version == 4
        assert second.manifests[area].version == 7
        assert second.next_item() is not None
    finally:
        second.stop()
    # A stored manifest that no longer verifies is ignored, not trusted.
    path = config.state_dir + f"/manifests/{area.replace('/', '%2F')}.json"
    with open(path, "rb") as fh:
        envelope = json.loads(fh.read())
    envelope["body"]["version"] = 99
    with open(path, "wb") as fh:
        fh.write(signing.canonical_json(envelope))
    third = Agent(config)
    try:
        assert area not in third.manifests
    finally:
        third.stop()


def test_excluded_receiver_and_items_without_media(tmp_path):
    """An item that excludes this receiver is not in its timeline; silence needs no download."""
    from schedules.manifest import Item, Manifest, MediaRef, merge

    media = MediaRef("e" * 64, "/media/" + "e" * 64 + ".mp3", 10, 1000)
    m = Manifest("area/x", 1, 0, 0, 10**13, [
        Item("pi-1.20261123.0.x", "a", 1000, 1000, "normal", media, exclude=("rx-2",)),
        Item("pi-2.20261123.0.x", "gap", 2000, 500, "normal", None, kind="separator"),
    ])
    mine, _ = merge([(0, m)], rx_id="rx-1")
    other, _ = merge([(0, m)], rx_id="rx-2")
    assert [i.id for _, i in mine] == ["pi-1.20261123.0.x", "pi-2.20261123.0.x"]
    assert [i.id for _, i in other] == ["pi-2.20261123.0.x"]
