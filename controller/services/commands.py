"""Signed commands to receivers: emergency play, stop, volume, resync (``cmd/<scope>``, QoS 1, not retained)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schedules import topics
from schedules.commands import DEFAULT_TTL_MS, Command, make_command
from schedules.events import now_ms
from schedules.signing import sign

logger = logging.getLogger(__name__)

Publish = Callable[[str, bytes, bool], None]
"""``publish(topic, payload, retain)`` as the controller runtime provides it."""


def build(
    key: Ed25519PrivateKey,
    scope: str,
    action: str,
    args: dict[str, Any] | None = None,
    *,
    now: int | None = None,
    ttl_ms: int = DEFAULT_TTL_MS,
) -> tuple[str, bytes, Command]:
    """A signed command ready to publish: ``(topic, payload, command)``; ValueError if invalid."""
    command = make_command(scope, action, args, now_ms=now_ms() if now is None else now, ttl_ms=ttl_ms)
    return topics.cmd(scope), sign(key, command.to_body()), command


def send(
    publish: Publish,
    key: Ed25519PrivateKey,
    scope: str,
    action: str,
    args: dict[str, Any] | None = None,
    *,
    ttl_ms: int = DEFAULT_TTL_MS,
) -> Command:
    """Sign and publish one command (never retained: a command is for the receivers online now)."""
    topic, payload, command = build(key, scope, action, args, ttl_ms=ttl_ms)
    publish(topic, payload, False)
    logger.info("command %s sent to %s (nonce %s)", action, scope, command.nonce)
    return command
