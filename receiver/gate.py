"""The command gate: which signed orders a receiver obeys, and the orders waiting to be carried out.

:class:`CommandGate` is the one implementation of the command rules, used by
the real agent and by every simulated receiver. A command is obeyed only when
it arrives on a scope the receiver follows, is genuine (signature, kind
``command``, scope), well formed, inside the ``ts`` window and not expired, and
its nonce was never used (the replay guard of Dallas 2017: the nonce is
remembered, durably on a real receiver, *before* the command is obeyed, so a
replay after a power cut is still refused). Every refusal is reported as a
``command.refused`` event; a refused signature also raises the
``signature_refused`` fault.

:class:`Orders` holds what an accepted ``emergency`` or ``test_tone`` leaves
for the player: at most one of each, waiting or playing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from receiver.cache import MediaCache
from receiver.holdings import Event
from receiver.verifier import Verifier
from schedules import events
from schedules.commands import TS_TOLERANCE_MS, Command, CommandError
from schedules.manifest import Item, MediaRef
from schedules.signing import SignatureError

logger = logging.getLogger(__name__)


class Nonces(Protocol):
    """Where used nonces are remembered (:class:`receiver.nonces.NonceStore` on disk, or :class:`NonceMemory`)."""

    def add(self, nonce: str, forget_after_ms: int, now_ms: int) -> bool: ...


class NonceMemory:
    """Used nonces in memory (the simulator's receivers): the same answers as the store on disk."""

    def __init__(self) -> None:
        self._until: dict[str, int] = {}

    def add(self, nonce: str, forget_after_ms: int, now_ms: int) -> bool:
        """Record ``nonce``; False if it was already there (a replay). Forgets the expired ones."""
        for old in [n for n, until in self._until.items() if until < now_ms]:
            del self._until[old]
        if nonce in self._until:
            return False
        self._until[nonce] = forget_after_ms
        return True


@dataclass(frozen=True)
class CommandVerdict:
    """A command to obey (``command`` set), or the refusal to report (``events``); ignored when both are empty."""

    command: Command | None = None
    body: dict[str, Any] | None = None
    events: tuple[Event, ...] = ()


def refusal(scope: str, body: dict[str, Any] | None, code: str, reason: str, *,
            signature: bool = False) -> tuple[Event, ...]:
    """The events that refuse a command: ``command.refused`` (and ``signature_refused`` for a forged one)."""
    body = body or {}
    action = body.get("action")
    nonce = body.get("nonce")
    refused: Event = (events.COMMAND_REFUSED, {
        "scope": scope,
        "action": action if isinstance(action, str) else None,
        "nonce": nonce if isinstance(nonce, str) else None,
        "code": code,
        "reason": reason,
    })
    if not signature:
        return (refused,)
    return refused, (events.FAULT_RAISED, {"fault": "signature_refused", "kind": "command", "scope": scope,
                                           "code": code, "reason": reason})


class CommandGate:
    """Check each command message against the protocol's rules."""

    def __init__(self, rx: str, verifier: Verifier, nonces: Nonces, follows: Callable[[str], bool]) -> None:
        self.rx = rx
        self._verifier = verifier
        self._nonces = nonces
        self._follows = follows

    def check(self, scope: str, payload: bytes, now_ms: int) -> CommandVerdict:
        """The verdict on one command message arriving on ``cmd/<scope>`` at local time ``now_ms``."""
        if not self._follows(scope):
            logger.debug("rx %s: ignoring command for %s, not one of its scopes", self.rx, scope)
            return CommandVerdict()
        try:
            checked = self._verifier.check(payload, "command", scope)
        except SignatureError as exc:
            return self._refuse(scope, None, exc.code, str(exc), signature=exc.code.startswith("sig."))
        command = checked.record
        try:
            if checked.error is not None:
                raise checked.error
            assert isinstance(command, Command)
            command.check_time(now_ms)
        except CommandError as exc:
            return self._refuse(scope, checked.body, exc.code, str(exc))
        if not self._nonces.add(command.nonce, command.ts + TS_TOLERANCE_MS, now_ms):
            return self._refuse(scope, checked.body, "cmd.replay", f"nonce {command.nonce} was already used")
        logger.info("rx %s: command %s on %s accepted (nonce %s)", self.rx, command.action, scope, command.nonce)
        return CommandVerdict(command, checked.body)

    def check_alert(self, scope: str, payload: bytes, now_ms: int) -> CommandVerdict:
        """The verdict on a retained alert state arriving on ``alert/<scope>`` (empty: the alert ended).

        Genuine, of a followed scope, carrying an alert of that scope, not
        expired. The ``ts`` window and the nonce do not apply: the state exists
        to let a receiver join an alert that started before it connected, and
        the player joins each alert once (by its id).
        """
        if not payload or not self._follows(scope):
            return CommandVerdict()
        try:
            checked = self._verifier.check(payload, "alert", scope)
        except SignatureError as exc:
            return self._refuse(scope, None, exc.code, str(exc), signature=exc.code.startswith("sig."))
        inner = checked.body.get("command")
        shown = inner if isinstance(inner, dict) else None
        command = checked.record
        try:
            if checked.error is not None:
                raise checked.error
            assert isinstance(command, Command)
            if now_ms >= command.expires:
                raise CommandError("cmd.expired", f"alert state expired {(now_ms - command.expires) / 1000:.1f} s ago")
        except CommandError as exc:
            return self._refuse(scope, shown, exc.code, str(exc))
        return CommandVerdict(command, shown)

    def _refuse(self, scope: str, body: dict[str, Any] | None, code: str, reason: str, *,
                signature: bool = False) -> CommandVerdict:
        logger.warning("rx %s: refused command on %s: %s (%s)", self.rx, scope, reason, code)
        return CommandVerdict(body=body, events=refusal(scope, body, code, reason, signature=signature))


def ack_fields(scope: str, command: Command) -> dict[str, Any]:
    """The fields every ``command.ack`` carries (the action adds its own)."""
    return {"scope": scope, "action": command.action, "nonce": command.nonce}


@dataclass
class Emergency:
    """An accepted alert (``emergency`` or ``drill``) waiting to play, or playing."""

    scope: str
    command: Command
    item: Item
    volume: int
    join: bool = False
    """Joined from the retained alert state: played where it stands now, not from its beginning."""

    @property
    def media(self) -> MediaRef | None:
        """Its media (the fallback of a stream), or None for a stream alone."""
        return self.item.media

    @property
    def mode(self) -> str:
        """``live`` or ``drill``."""
        return self.command.mode

    def ready(self, cache: MediaCache) -> bool:
        """Whether it can play now: a stream connects by itself, a file must be in the cache."""
        if self.item.kind == "relay":
            return True
        return self.media is not None and cache.path(self.media.sha256) is not None


@dataclass
class Tone:
    """An accepted ``test_tone`` command waiting to play (or playing)."""

    scope: str
    command: Command
    duration_s: int
    frequency_hz: int


class Orders:
    """The emergency and the test tone accepted and not yet taken by the player."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.emergency: Emergency | None = None
        self.tone: Tone | None = None
        self.alerts: dict[str, int] = {}
        """Id -> planned end of every alert taken in this run: each plays once, by command or alert state."""

    def offer_alert(self, emergency: Emergency, now_ms: int) -> bool:
        """Make ``emergency`` the alert waiting, unless this alert was already taken; whether it was new."""
        with self.lock:
            for old in [i for i, end in self.alerts.items() if end < now_ms - 3600_000]:
                del self.alerts[old]
            if emergency.item.id in self.alerts:
                return False
            self.alerts[emergency.item.id] = emergency.item.end_ms
            self.emergency = emergency
        return True

    def take_emergency(self, emergency: Emergency) -> Tone | None:
        """The player starts ``emergency`` (if still the one waiting); returns a waiting tone it cancels."""
        with self.lock:
            if self.emergency is emergency:
                self.emergency = None
            tone, self.tone = self.tone, None
        return tone

    def drop_emergency(self, emergency: Emergency) -> None:
        """``emergency`` will not play (its media never came)."""
        with self.lock:
            if self.emergency is emergency:
                self.emergency = None

    def take_tone(self, tone: Tone) -> None:
        """The player starts ``tone`` (if still the one waiting)."""
        with self.lock:
            if self.tone is tone:
                self.tone = None

    def clear(self) -> tuple[Emergency | None, Tone | None]:
        """A ``stop``: forget both; returns what was waiting."""
        with self.lock:
            emergency, self.emergency = self.emergency, None
            tone, self.tone = self.tone, None
        return emergency, tone
