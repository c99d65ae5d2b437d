"""Event records: each kind carries its required fields, checked where events are made and where they arrive."""

from __future__ import annotations

import json

import pytest

from schedules import events


def _wire(type_: str, **fields: object) -> bytes:
    body = {"v": 1, "id": "0b5b2f7e-8f53-4a53-9d3c-2b1b6c1f0a11", "rx": "rx-1", "ts": 1, "type": type_, **fields}
    return json.dumps(body).encode()


def test_every_kind_has_its_required_fields() -> None:
    assert set(events.REQUIRED) == events.TYPES


@pytest.mark.parametrize("type_", sorted(events.TYPES))
def test_make_event_needs_the_fields_of_its_kind(type_: str) -> None:
    required = events.REQUIRED[type_]
    if not required:
        return
    with pytest.raises(ValueError, match="needs|vocabulary"):
        events.make_event("rx-1", type_)
    # One field of another JSON type is as bad as a missing one.
    name, kind = next(iter(required.items()))
    wrong = {str: 7, int: "7", bool: 1}[kind]
    with pytest.raises(ValueError, match=f"{name}|vocabulary"):
        events.make_event("rx-1", type_, **{name: wrong})


def test_decode_refuses_a_known_kind_without_its_fields() -> None:
    with pytest.raises(ValueError, match="lacks fault"):
        events.decode(_wire(events.FAULT_RAISED, reason="x"))
    with pytest.raises(ValueError, match="lacks item_id"):
        events.decode(_wire(events.PLAYBACK_STARTED, item_id=None))
    with pytest.raises(ValueError, match="version"):
        events.decode(_wire(events.MANIFEST_ACCEPTED, scope="area/x", version=True))  # a bool is not a number
    good = events.decode(_wire(events.MANIFEST_ACCEPTED, scope="area/x", version=3, items=2))
    assert good["version"] == 3 and good["items"] == 2
    # An unknown kind has no required fields: the controller stores it as unknown.
    assert events.decode(_wire("sound.heard"), any_type=True)["type"] == "sound.heard"


def test_what_the_receiver_emits_round_trips() -> None:
    ev = events.make_event("rx-1", events.PLAYBACK_FINISHED, item_id="pi-1", scope="area/x", end_reason="complete",
                           played_ms=1000)
    assert events.decode(events.encode(ev)) == ev
