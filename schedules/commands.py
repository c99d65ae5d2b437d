"""Signed commands on ``cmd/<scope>``: emergency and drill alerts, stop, volume, resync, test tone.

A command body (signed like a manifest, :mod:`schedules.signing`) is::

    {"kind": "command", "scope": "area/quang-phu", "action": "emergency",
     "ts": 1700000000000, "nonce": "<uuid4 hex>", "expires": 1700000600000,
     "args": {...}}

``ts`` is when the controller issued it and ``expires`` when it stops being
valid (both UTC epoch ms). A receiver refuses a command whose ``ts`` lies
outside ``TS_TOLERANCE_MS`` of its clock, which has expired, or whose
``nonce`` it has already seen (replay); it remembers nonces until their
command could no longer pass the ``ts`` check.

Actions and their ``args``:

- ``emergency``: ``id``, ``volume`` (0-100), ``media`` (a manifest media
  reference) and/or ``url`` (a live stream: live voice or a relay played at
  emergency level; ``media`` is then its fallback), ``duration_ms`` (defaults to
  the media's; required with ``url``), optional ``title``: plays at once,
  pre-empting everything; the programme resumes where it now stands.
- ``drill``: the same arguments; an exercise (diễn tập). A different action, so
  that no flag can turn a drill into a live alert or back: receivers report it
  with ``mode`` ``drill`` and the controller shows it in its own colour.
- ``stop``: ends what plays now (an emergency included); with ``id``, only
  when that alert is what plays or waits.
- ``volume``: ``volume`` (0-100) for the programme from now on.
- ``resync``: re-subscribe, resend pending events and a heartbeat.
- ``test_tone``: ``duration_s`` (1-30, default 5), ``frequency_hz`` (100-4000,
  default 1000): a sine at the programme volume, pre-empting the programme but
  never an emergency (a receiver playing one refuses it, ``cmd.busy``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from schedules.manifest import Item, ManifestError, parse_item

ACTIONS = ("emergency", "drill", "stop", "volume", "resync", "test_tone")
TONE_DURATION_S = (1, 30, 5)
"""``test_tone`` ``duration_s``: minimum, maximum, default."""
TONE_FREQUENCY_HZ = (100, 4000, 1000)
"""``test_tone`` ``frequency_hz``: minimum, maximum, default."""
ALERT_ACTIONS = ("emergency", "drill")
"""The actions that broadcast an alert (live or exercise); the same arguments, told apart by the action."""
STREAM_SCHEMES = ("http://", "https://")
ALERT_KIND = "alert"
"""Signed ``kind`` of the retained alert state on ``alert/<scope>`` (see :func:`alert_body`)."""
TS_TOLERANCE_MS = 5 * 60 * 1000
"""How far a command's ``ts`` may be from the receiver's clock, either way."""
MAX_TTL_MS = 24 * 3600 * 1000
DEFAULT_TTL_MS = 10 * 60 * 1000
_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


class CommandError(ValueError):
    """A command is malformed, stale, expired or replayed; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Command:
    """One verified command."""

    scope: str
    action: str
    ts: int
    nonce: str
    expires: int
    args: dict[str, Any] = field(default_factory=dict)

    def to_body(self) -> dict[str, Any]:
        """The signed body (``kind`` = ``command``)."""
        return {
            "kind": "command",
            "scope": self.scope,
            "action": self.action,
            "ts": self.ts,
            "nonce": self.nonce,
            "expires": self.expires,
            "args": dict(self.args),
        }

    @property
    def is_alert(self) -> bool:
        """An ``emergency`` or a ``drill``."""
        return self.action in ALERT_ACTIONS

    @property
    def mode(self) -> str:
        """``live`` or ``drill`` for an alert, else ``""``."""
        return {"emergency": "live", "drill": "drill"}.get(self.action, "")

    def item(self) -> Item:
        """The item an alert plays, starting at ``ts`` (validated by :meth:`from_body`)."""
        return alert_item(self)

    @property
    def volume(self) -> int | None:
        """The volume the command carries, if any."""
        value = self.args.get("volume")
        return value if isinstance(value, int) else None

    @property
    def tone_duration_s(self) -> int:
        """A ``test_tone``'s duration in seconds (validated by :meth:`from_body`; default 5)."""
        value = self.args.get("duration_s")
        return value if isinstance(value, int) else TONE_DURATION_S[2]

    @property
    def tone_frequency_hz(self) -> int:
        """A ``test_tone``'s frequency in Hz (validated by :meth:`from_body`; default 1000)."""
        value = self.args.get("frequency_hz")
        return value if isinstance(value, int) else TONE_FREQUENCY_HZ[2]

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Command:
        """Validate the shape of a verified body; raises CommandError (``cmd.*`` codes)."""
        if body.get("kind") != "command":
            raise CommandError("cmd.malformed", "body is not a command")
        action = body.get("action")
        if action not in ACTIONS:
            raise CommandError("cmd.unknown_action", f"unknown action {action!r}")
        ts, expires, nonce = body.get("ts"), body.get("expires"), body.get("nonce")
        for name, value in (("ts", ts), ("expires", expires)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CommandError("cmd.malformed", f"{name} must be epoch milliseconds")
        if not isinstance(nonce, str) or not _NONCE.match(nonce):
            raise CommandError("cmd.malformed", "nonce must be 16-64 letters, digits, '-' or '_'")
        args = body.get("args", {})
        if not isinstance(args, dict):
            raise CommandError("cmd.malformed", "args must be an object")
        assert isinstance(ts, int) and isinstance(expires, int)
        if expires <= ts or expires - ts > MAX_TTL_MS:
            raise CommandError("cmd.malformed", "expires must be after ts, by at most 24 h")
        command = cls(str(body.get("scope")), action, ts, nonce, expires, args)
        volume = args.get("volume")
        if action in ("volume", *ALERT_ACTIONS) or volume is not None:
            if not isinstance(volume, int) or isinstance(volume, bool) or not 0 <= volume <= 100:
                raise CommandError("cmd.malformed", "volume must be an integer 0-100")
        if action in ALERT_ACTIONS:
            alert_item(command)
        if action == "test_tone":
            for name, (low, high, _default) in (("duration_s", TONE_DURATION_S), ("frequency_hz", TONE_FREQUENCY_HZ)):
                value = args.get(name)
                if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                          or not low <= value <= high):
                    raise CommandError("cmd.malformed", f"{name} must be an integer {low}-{high}")
        return command

    def check_time(self, now_ms: int, tolerance_ms: int = TS_TOLERANCE_MS) -> None:
        """Raise CommandError (``cmd.stale``, ``cmd.expired``) unless valid at ``now_ms``."""
        if abs(now_ms - self.ts) > tolerance_ms:
            off_s, tol_s = (now_ms - self.ts) / 1000, tolerance_ms / 1000
            raise CommandError("cmd.stale", f"ts is {off_s:+.1f} s from the local clock (tolerance ±{tol_s:.0f} s)")
        if now_ms >= self.expires:
            raise CommandError("cmd.expired", f"expired {(now_ms - self.expires) / 1000:.1f} s ago")


def alert_item(command: Command) -> Item:
    """The item of an ``emergency`` or ``drill``: ``media``, or a stream ``url`` (with ``media`` as fallback)."""
    args = command.args
    what = command.action
    try:
        media = args.get("media")
        url = args.get("url")
        if url is not None and (not isinstance(url, str) or not url.startswith(STREAM_SCHEMES) or len(url) > 2000):
            raise CommandError("cmd.malformed", f"{what}: url must be an http(s) URL")
        if media is None and url is None:
            raise CommandError("cmd.malformed", f"{what} lacks 'media' (or a stream 'url')")
        if url is not None:
            duration = args["duration_ms"]
        else:
            assert media is not None
            duration = args.get("duration_ms", media["duration_ms"])
        raw: dict[str, Any] = {
            "id": args["id"],
            "title": args.get("title", ""),
            "start_ms": command.ts,
            "duration_ms": duration,
            "priority": "emergency",
            "media": media,
        }
        if url is not None:
            raw.update(kind="relay", url=url)
        return parse_item(raw)
    except KeyError as exc:
        raise CommandError("cmd.malformed", f"{what} lacks {exc.args[0]!r}") from exc
    except (ManifestError, TypeError, AttributeError) as exc:
        raise CommandError("cmd.malformed", f"{what}: {exc}") from exc


def alert_body(command: Command) -> dict[str, Any]:
    """The retained alert state of a running alert: its command, re-signed as ``kind`` ``alert``.

    Published retained on ``alert/<scope>`` while the alert runs (and cleared when
    it ends or is stopped), so that a receiver connecting during it joins where it
    stands. Its validity is the command's ``expires``; the ``ts`` window does not
    apply (an alert may have started long before a receiver comes back).
    """
    if not command.is_alert:
        raise ValueError(f"{command.action} is not an alert")
    return {"kind": ALERT_KIND, "scope": command.scope, "command": command.to_body()}


def command_of_alert(body: dict[str, Any]) -> Command:
    """The alert command a verified alert state carries; CommandError when it is not one."""
    inner = body.get("command")
    if not isinstance(inner, dict):
        raise CommandError("cmd.malformed", "alert state carries no command")
    command = Command.from_body(inner)
    if not command.is_alert or command.scope != body.get("scope"):
        raise CommandError("cmd.malformed", "alert state must carry an alert of its own scope")
    return command


def make_command(
    scope: str, action: str, args: dict[str, Any] | None = None, *, now_ms: int, ttl_ms: int = DEFAULT_TTL_MS
) -> Command:
    """A new command with a fresh nonce, valid for ``ttl_ms`` from ``now_ms``."""
    command = Command(scope, action, now_ms, uuid.uuid4().hex, now_ms + ttl_ms, dict(args or {}))
    Command.from_body(command.to_body())  # refuse to build what receivers would refuse
    return command
