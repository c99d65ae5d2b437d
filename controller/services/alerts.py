"""Alerts on the wire: one signed command per target scope, and the retained alert state while it runs.

An alert (``emergency``, or ``drill``: a different action, never a flag) goes to
each target scope as one signed command on ``cmd/<scope>`` (every receiver
following the scope plays it at once) and, re-signed as ``kind`` ``alert``,
retained on ``alert/<scope>`` until it ends, so that a receiver connecting
during it joins where it stands. Ending it (stop, or its natural end) clears
the retained state and sends ``stop`` with the alert's id, so that only this
alert is silenced. The command expires a grace after the alert's planned end:
a state the controller failed to clear is refused by receivers after that.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schedules import topics
from schedules.commands import ALERT_ACTIONS, Command, alert_body, make_command
from schedules.events import now_ms
from schedules.signing import sign

logger = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], None]
"""``publish(topic, payload, retain)`` as the controller runtime provides it."""

EXPIRY_GRACE_MS = 60_000
"""How long after its planned end an alert's command (and so its retained state) stays valid."""


@dataclass(frozen=True)
class Sent:
    """What went out for one target scope."""

    scope: str
    command: Command


def broadcast(publish: Publish, key: Ed25519PrivateKey, scopes: Iterable[str], action: str, args: dict[str, Any],
              *, duration_ms: int, now: int | None = None) -> list[Sent]:
    """Send an alert to every scope in ``scopes``: its command, then its retained state. ValueError if invalid."""
    if action not in ALERT_ACTIONS:
        raise ValueError(f"{action!r} is not an alert action")
    at = now_ms() if now is None else now
    ttl_ms = duration_ms + EXPIRY_GRACE_MS
    sent: list[Sent] = []
    for scope in dict.fromkeys(scopes):  # once per scope, in the order given
        command = make_command(scope, action, dict(args, duration_ms=duration_ms), now_ms=at, ttl_ms=ttl_ms)
        publish(topics.cmd(scope), sign(key, command.to_body()), False)
        publish(topics.alert(scope), sign(key, alert_body(command)), True)
        sent.append(Sent(scope, command))
    logger.warning("%s %s sent to %d scope(s): %s", action, args.get("id"), len(sent), ", ".join(s.scope for s in sent))
    return sent


def end(publish: Publish, key: Ed25519PrivateKey, scopes: Iterable[str], alert_id: str,
        *, now: int | None = None) -> None:
    """End an alert on every scope: clear its retained state, and stop it where it still plays."""
    at = now_ms() if now is None else now
    for scope in dict.fromkeys(scopes):
        publish(topics.alert(scope), b"", True)
        stop = make_command(scope, "stop", {"id": alert_id}, now_ms=at)
        publish(topics.cmd(scope), sign(key, stop.to_body()), False)
    logger.warning("alert %s ended", alert_id)
