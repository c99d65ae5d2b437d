"""The heartbeat: what a receiver says about itself on ``rx/<rx>/hb`` (QoS 0, not retained).

One record for both sides: the receiver builds a :class:`Heartbeat` and sends
:meth:`Heartbeat.encode`; the controller reads the wire with :meth:`Heartbeat.decode`.
Every field has one name. A receiver is not trusted: a field of the wrong JSON type, a
number that is not finite or a word outside the vocabulary is read as absent (``None``)
and named in :attr:`Heartbeat.ignored`; strings are cut to a bound. Only a body that is
not a heartbeat at all (not an object, another protocol version, no ``rx``/``ts``)
raises :class:`HeartbeatError`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schedules import vocab
from schedules.topics import PROTOCOL_VERSION

NETWORK_TYPES = frozenset({"cellular", "wifi", "ethernet"})
"""``network.type``: how the box reaches the broker (None: it cannot tell)."""

_TEXT_LIMITS = {"version": 40, "playing": 200, "tech": 20, "interface": 32}


class HeartbeatError(ValueError):
    """The payload is not a heartbeat of this protocol."""


@dataclass(frozen=True)
class Network:
    """The link the heartbeat went out on: ``type``, signal in % and dBm, radio technology, interface."""

    type: str | None = None
    signal_pct: float | None = None
    rssi_dbm: float | None = None
    tech: str | None = None
    interface: str | None = None

    def body(self) -> dict[str, Any]:
        return {"type": self.type, "signal_pct": self.signal_pct, "rssi_dbm": self.rssi_dbm, "tech": self.tech,
                "interface": self.interface}


@dataclass(frozen=True)
class Heartbeat:
    """One heartbeat. ``manifests`` maps each scope held to its version; ``faults`` lists the active ones."""

    rx: str
    ts: int
    uptime_s: float | None = None
    version: str | None = None
    manifests: Mapping[str, int] = field(default_factory=dict)
    playing: str | None = None
    volume: int | None = None
    cache_files: int | None = None
    cache_bytes: int | None = None
    disk_total_bytes: int | None = None
    disk_free_bytes: int | None = None
    clock_offset_ms: float | None = None
    temperature_c: float | None = None
    network: Network | None = None
    faults: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    """Fields the sender gave with a type or value the protocol does not allow (read: never sent)."""

    def body(self) -> dict[str, Any]:
        """The wire object (``v`` first, as every loaxa message)."""
        disk = None
        if self.disk_total_bytes is not None and self.disk_free_bytes is not None:
            disk = {"total_bytes": self.disk_total_bytes, "free_bytes": self.disk_free_bytes}
        return {
            "v": PROTOCOL_VERSION,
            "rx": self.rx,
            "ts": self.ts,
            "uptime_s": self.uptime_s,
            "version": self.version,
            "manifests": dict(self.manifests),
            "playing": self.playing,
            "volume": self.volume,
            "cache_files": self.cache_files,
            "cache_bytes": self.cache_bytes,
            "disk": disk,
            "disk_free_bytes": self.disk_free_bytes,
            "clock_offset_ms": self.clock_offset_ms,
            "temperature_c": self.temperature_c,
            "network": None if self.network is None else self.network.body(),
            "faults": list(self.faults),
        }

    def encode(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def decode(cls, payload: bytes | str | Mapping[str, Any]) -> Heartbeat:
        """Read a heartbeat from wire bytes (or a parsed object); raises :class:`HeartbeatError`."""
        if isinstance(payload, Mapping):
            raw: Any = payload
        else:
            try:
                raw = json.loads(payload)
            except (UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise HeartbeatError(f"heartbeat is not JSON: {type(exc).__name__}") from exc
        if not isinstance(raw, Mapping):
            raise HeartbeatError("heartbeat is not an object")
        if raw.get("v") != PROTOCOL_VERSION:
            raise HeartbeatError(f"unsupported heartbeat version {str(raw.get('v'))[:20]!r}")
        rx, ts = raw.get("rx"), raw.get("ts")
        if not isinstance(rx, str) or not isinstance(ts, int) or isinstance(ts, bool):
            raise HeartbeatError("heartbeat needs rx (string) and ts (integer)")
        reader = _Reader(raw)
        disk = raw.get("disk")
        total = _Reader(disk).integer("total_bytes") if isinstance(disk, Mapping) else None
        return cls(
            rx=rx,
            ts=ts,
            uptime_s=reader.number("uptime_s"),
            version=reader.text("version"),
            manifests=reader.manifests(),
            playing=reader.text("playing"),
            volume=reader.integer("volume"),
            cache_files=reader.integer("cache_files"),
            cache_bytes=reader.integer("cache_bytes"),
            disk_total_bytes=total,
            disk_free_bytes=reader.integer("disk_free_bytes"),
            clock_offset_ms=reader.number("clock_offset_ms"),
            temperature_c=reader.number("temperature_c"),
            network=reader.network(),
            faults=reader.faults(),
            ignored=tuple(reader.ignored),
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Reader:
    """Reads fields of one untrusted object, noting the ones it had to ignore."""

    def __init__(self, raw: Mapping[str, Any], prefix: str = "") -> None:
        self.raw, self.prefix = raw, prefix
        self.ignored: list[str] = []

    def _bad(self, name: str) -> None:
        self.ignored.append(self.prefix + name)

    def number(self, name: str) -> float | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        self._bad(name)
        return None

    def integer(self, name: str) -> int | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if _is_int(value):
            return int(value)
        self._bad(name)
        return None

    def text(self, name: str) -> str | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if isinstance(value, str):
            return value[:_TEXT_LIMITS.get(name, 200)]
        self._bad(name)
        return None

    def manifests(self) -> dict[str, int]:
        value = self.raw.get("manifests")
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self._bad("manifests")
            return {}
        held = {str(scope)[:200]: int(version) for scope, version in value.items() if _is_int(version)}
        if len(held) != len(value):
            self._bad("manifests")
        return held

    def faults(self) -> tuple[str, ...]:
        value = self.raw.get("faults")
        if value is None:
            return ()
        if not isinstance(value, list):
            self._bad("faults")
            return ()
        words = tuple(sorted({f for f in value if isinstance(f, str) and f in vocab.FAULTS}))
        if len(words) != len(set(map(str, value))):
            self._bad("faults")
        return words

    def network(self) -> Network | None:
        value = self.raw.get("network")
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self._bad("network")
            return None
        inner = _Reader(value, "network.")
        kind = inner.text("type")
        if kind is not None and kind not in NETWORK_TYPES:
            inner._bad("type")
            kind = None
        network = Network(type=kind, signal_pct=inner.number("signal_pct"), rssi_dbm=inner.number("rssi_dbm"),
                          tech=inner.text("tech"), interface=inner.text("interface"))
        self.ignored += inner.ignored
        return network
