"""Receiver configuration as pushed by the controller on ``conf/<rx>``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ConfError(ValueError):
    """A conf body does not have the shape protocol v1 requires."""


@dataclass
class ReceiverConf:
    """What the controller tells one receiver: its scopes (widest first) and volume."""

    rx: str
    version: int
    scopes: list[str] = field(default_factory=list)
    volume: int = 80

    def to_body(self) -> dict[str, Any]:
        """The signed body (``kind`` = ``conf``, scope ``rx/<id>``)."""
        return {
            "kind": "conf",
            "scope": f"rx/{self.rx}",
            "rx": self.rx,
            "version": self.version,
            "scopes": list(self.scopes),
            "volume": self.volume,
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> ReceiverConf:
        """Validate a verified body, or raise ConfError."""
        try:
            scopes = body["scopes"]
            if not isinstance(scopes, list) or not all(
                isinstance(s, str) and (s.startswith("area/") or s.startswith("rx/")) for s in scopes
            ):
                raise ConfError("scopes must be a list of area/<id> or rx/<id>")
            version = body["version"]
            volume = body.get("volume", 80)
            if not isinstance(version, int) or version < 1:
                raise ConfError("version must be a positive integer")
            if not isinstance(volume, int) or not 0 <= volume <= 100:
                raise ConfError("volume must be 0-100")
            return cls(rx=str(body["rx"]), version=version, scopes=scopes, volume=volume)
        except KeyError as exc:
            raise ConfError(f"missing field {exc.args[0]!r}") from exc
