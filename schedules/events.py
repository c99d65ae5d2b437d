"""Events a receiver reports on ``rx/<rx>/events`` (QoS 1, ids for idempotency)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from schedules import vocab
from schedules.topics import PROTOCOL_VERSION

PLAYBACK_STARTED = "playback.started"
PLAYBACK_FINISHED = "playback.finished"
PLAYBACK_FAILED = "playback.failed"
FAULT_RAISED = "fault.raised"
FAULT_CLEARED = "fault.cleared"
MANIFEST_ACCEPTED = "manifest.accepted"
MANIFEST_REFUSED = "manifest.refused"
CONF_ACCEPTED = "conf.accepted"
COMMAND_ACK = "command.ack"
COMMAND_REFUSED = "command.refused"
AMPLIFIER_CHANGED = "amplifier.changed"
RELAY_FALLBACK = "relay.fallback"
"""A relay's stream stayed down past the receiver's grace; its fallback plays (``reason``, ``down_ms``)."""
TEST_TONE_STARTED = "test_tone.started"
TEST_TONE_FINISHED = "test_tone.finished"

TYPES = frozenset(
    {
        PLAYBACK_STARTED,
        PLAYBACK_FINISHED,
        PLAYBACK_FAILED,
        FAULT_RAISED,
        FAULT_CLEARED,
        MANIFEST_ACCEPTED,
        MANIFEST_REFUSED,
        CONF_ACCEPTED,
        COMMAND_ACK,
        COMMAND_REFUSED,
        AMPLIFIER_CHANGED,
        RELAY_FALLBACK,
        TEST_TONE_STARTED,
        TEST_TONE_FINISHED,
    }
)


# The fields an event of each kind must carry, with their JSON types: ``make_event`` refuses an
# event without them (a programming error in the receiver), ``decode`` refuses one from the wire
# (the controller logs it and stores nothing). Other fields are optional and free.
REQUIRED: dict[str, dict[str, type]] = {
    PLAYBACK_STARTED: {"item_id": str},
    PLAYBACK_FINISHED: {"item_id": str, "end_reason": str},
    PLAYBACK_FAILED: {"item_id": str, "code": str},
    FAULT_RAISED: {"fault": str},
    FAULT_CLEARED: {"fault": str},
    MANIFEST_ACCEPTED: {"scope": str, "version": int},
    MANIFEST_REFUSED: {"scope": str, "code": str},
    CONF_ACCEPTED: {"version": int},
    COMMAND_ACK: {"action": str},
    COMMAND_REFUSED: {"code": str},
    AMPLIFIER_CHANGED: {"on": bool},
    RELAY_FALLBACK: {"item_id": str},
    TEST_TONE_STARTED: {"nonce": str},
    TEST_TONE_FINISHED: {"nonce": str, "end_reason": str},
}
assert set(REQUIRED) == TYPES


def missing_fields(event: dict[str, Any]) -> list[str]:
    """The required fields of ``event``'s kind that it lacks or carries with another JSON type."""
    wrong = []
    for name, kind in REQUIRED.get(str(event.get("type")), {}).items():
        value = event.get(name)
        # JSON has one number type; bool is an int to Python but not a number on the wire.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            wrong.append(name)
    return wrong


def now_ms() -> int:
    """UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000


def make_event(rx: str, type_: str, **fields: Any) -> dict[str, Any]:
    """A new event with a fresh uuid4 ``id`` and the current time."""
    if type_ not in TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    event = {"v": PROTOCOL_VERSION, "id": str(uuid.uuid4()), "rx": rx, "ts": now_ms(), "type": type_, **fields}
    bad = vocab.violations(event)
    if bad:  # a programming error: the controller would store it as unknown and raise protocol_violation
        raise ValueError(f"{type_} with words outside the shared vocabulary: {bad!r}")
    lacking = missing_fields(event)
    if lacking:
        wanted = ", ".join(f"{f} ({REQUIRED[type_][f].__name__})" for f in lacking)
        raise ValueError(f"{type_} needs {wanted}")
    return event


def encode(event: dict[str, Any]) -> bytes:
    """Wire bytes of an event."""
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def decode(payload: bytes, *, any_type: bool = False) -> dict[str, Any]:
    """Parse and check an event; raises ValueError when it is not one.

    A known kind must carry its :data:`REQUIRED` fields.
    With ``any_type`` an event of a type outside :data:`TYPES` is returned as it is (the
    controller stores it as ``unknown``); otherwise it is refused.
    """
    event = json.loads(payload.decode("utf-8"))
    if not isinstance(event, dict):
        raise ValueError("event is not an object")
    if event.get("v") != PROTOCOL_VERSION:
        raise ValueError(f"unsupported event version {event.get('v')!r}")
    for key in ("id", "rx", "ts", "type"):
        if key not in event:
            raise ValueError(f"event lacks {key!r}")
    if not isinstance(event["ts"], int) or isinstance(event["ts"], bool) or not isinstance(event["rx"], str):
        raise ValueError("event ts must be an integer and rx a string")
    if not isinstance(event["type"], str):
        raise ValueError("event type must be a string")
    if event["type"] not in TYPES and not any_type:
        raise ValueError(f"unknown event type {event['type']!r}")
    lacking = missing_fields(event)
    if lacking:
        raise ValueError(f"{event['type']} event lacks {', '.join(lacking)} (or has another type)")
    try:
        uuid.UUID(str(event["id"]))
    except ValueError as exc:
        raise ValueError("event id is not a uuid") from exc
    return event
