"""Manifests: what a scope plays from now to now+48 h, as sent on the wire.

Times are UTC epoch milliseconds. A manifest body is signed by the controller
(:mod:`schedules.signing`); this module only builds, validates and merges them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from schedules.signing import canonical_json

PRIORITIES = ("normal", "priority", "emergency")
"""The three levels of Circular 39/2020, lowest first."""

WINDOW_MS = 48 * 3600 * 1000
MAX_ITEMS = 5000
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/-]{1,200}$")


class ManifestError(ValueError):
    """A manifest body does not have the shape protocol v1 requires."""


def priority_rank(priority: str) -> int:
    """0 for normal, 1 for priority, 2 for emergency."""
    return PRIORITIES.index(priority)


@dataclass(frozen=True)
class MediaRef:
    """A content-addressed media file; ``path`` is relative to the media base URL."""

    sha256: str
    path: str
    bytes: int
    duration_ms: int
    format: str = "mp3"


ITEM_KINDS = ("audio", "text", "relay", "separator")


@dataclass(frozen=True)
class Item:
    """One scheduled play: a media file, or a live relay (``url``) with its fallback in ``media``.

    ``exclude`` names receivers of the scope that must not play it.
    """

    id: str
    title: str
    start_ms: int
    duration_ms: int
    priority: str
    media: MediaRef | None
    kind: str = "audio"
    url: str | None = None
    exclude: tuple[str, ...] = ()

    @property
    def end_ms(self) -> int:
        """Scheduled end, epoch ms."""
        return self.start_ms + self.duration_ms


@dataclass
class Manifest:
    """Everything one scope plays in a window."""

    scope: str
    version: int
    generated_ms: int
    window_start_ms: int
    window_end_ms: int
    items: list[Item] = field(default_factory=list)

    def content_hash(self) -> str:
        """Hash of what would play; the rolling window alone does not change it."""
        return hashlib.sha256(canonical_json([asdict(i) for i in self.items])).hexdigest()

    def to_body(self) -> dict[str, Any]:
        """The signed body (``kind`` = ``manifest``)."""
        return {
            "kind": "manifest",
            "scope": self.scope,
            "version": self.version,
            "generated_ms": self.generated_ms,
            "window": [self.window_start_ms, self.window_end_ms],
            "items": [asdict(i) for i in self.items],
        }

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Manifest:
        """Validate a verified body and build the manifest, or raise ManifestError."""
        try:
            if body.get("kind") != "manifest":
                raise ManifestError("body is not a manifest")
            version = _int(body["version"], "version", minimum=1)
            window = body["window"]
            if not (isinstance(window, list) and len(window) == 2):
                raise ManifestError("window must be [start, end]")
            raw_items = body["items"]
            if not isinstance(raw_items, list) or len(raw_items) > MAX_ITEMS:
                raise ManifestError(f"items must be a list of at most {MAX_ITEMS}")
            items = [parse_item(x) for x in raw_items]
            return cls(
                scope=str(body["scope"]),
                version=version,
                generated_ms=_int(body["generated_ms"], "generated_ms"),
                window_start_ms=_int(window[0], "window start"),
                window_end_ms=_int(window[1], "window end"),
                items=sorted(items, key=lambda i: (i.start_ms, i.id)),
            )
        except KeyError as exc:
            raise ManifestError(f"missing field {exc.args[0]!r}") from exc
        except (TypeError, AttributeError) as exc:
            raise ManifestError(f"malformed manifest: {exc}") from exc


def _int(value: Any, name: str, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ManifestError(f"{name} must be an integer >= {minimum}")
    return value


def _media(media: dict[str, Any]) -> MediaRef:
    sha = str(media["sha256"])
    if not _SHA256.match(sha):
        raise ManifestError(f"media sha256 {sha!r} is not 64 hex digits")
    path = str(media["path"])
    if ".." in path or not path.startswith("/"):
        raise ManifestError(f"media path {path!r} must be absolute and stay inside the media root")
    return MediaRef(
        sha256=sha,
        path=path,
        bytes=_int(media["bytes"], "media bytes"),
        duration_ms=_int(media["duration_ms"], "media duration_ms"),
        format=str(media.get("format", "mp3")),
    )


def parse_item(raw: dict[str, Any]) -> Item:
    """One item of a manifest (or of an emergency command) from its wire dict; raises ManifestError."""
    kind = str(raw.get("kind", "audio"))
    if kind not in ITEM_KINDS:
        raise ManifestError(f"unknown item kind {kind!r}")
    url = raw.get("url")
    if kind == "relay" and not isinstance(url, str):
        raise ManifestError("a relay item needs its url")
    media = raw.get("media")
    if media is None and kind not in ("relay", "separator"):  # a bare separator is silence
        raise ManifestError("missing field 'media'")
    exclude = raw.get("exclude", [])
    if not isinstance(exclude, (list, tuple)) or not all(isinstance(x, str) for x in exclude):
        raise ManifestError("exclude must be a list of receiver ids")
    item_id = str(raw["id"])
    if not _SAFE_ID.match(item_id):
        raise ManifestError(f"item id {item_id!r} has unsafe characters")
    priority = str(raw["priority"])
    if priority not in PRIORITIES:
        raise ManifestError(f"unknown priority {priority!r}")
    return Item(
        id=item_id,
        title=str(raw.get("title", ""))[:300],
        start_ms=_int(raw["start_ms"], "start_ms"),
        duration_ms=_int(raw["duration_ms"], "duration_ms", minimum=1),
        priority=priority,
        media=_media(media) if media is not None else None,
        kind=kind,
        url=url if isinstance(url, str) else None,
        exclude=tuple(exclude),
    )


@dataclass(frozen=True)
class Conflict:
    """An item that lost its slot to another, with the reason."""

    loser: Item
    loser_scope: str
    winner: Item
    winner_scope: str
    reason: str


def merge(
    manifests: list[tuple[int, Manifest]], rx_id: str | None = None
) -> tuple[list[tuple[str, Item]], list[Conflict]]:
    """Merge the manifests a receiver holds into one timeline without overlaps.

    ``manifests`` pairs each manifest with the width of its scope (0 = widest,
    e.g. the province). On overlap the higher priority wins, then the wider
    scope, then the earlier start, then the id; the loser is returned as a
    conflict, never silently dropped. Items that exclude ``rx_id`` are left out
    first. Returns ``[(scope, item)]`` sorted by start.
    """
    candidates = [
        (width, m.scope, item)
        for width, m in manifests
        for item in m.items
        if rx_id is None or rx_id not in item.exclude
    ]
    # Strongest first: the greedy pass then never lets a weaker item displace a stronger one.
    candidates.sort(key=lambda c: (-priority_rank(c[2].priority), c[0], c[2].start_ms, c[2].id))
    kept: list[tuple[int, str, Item]] = []
    conflicts: list[Conflict] = []
    for width, scope, item in candidates:
        clash = next(
            (k for k in kept if k[2].start_ms < item.end_ms and item.start_ms < k[2].end_ms and k[2].id != item.id),
            None,
        )
        if clash is None:
            if not any(k[2].id == item.id and k[2].start_ms == item.start_ms for k in kept):
                kept.append((width, scope, item))
            continue
        if priority_rank(clash[2].priority) > priority_rank(item.priority):
            reason = f"lower priority ({item.priority} < {clash[2].priority})"
        elif clash[0] < width:
            reason = "same priority, narrower area"
        else:
            reason = "same priority and area, starts later"
        conflicts.append(Conflict(item, scope, clash[2], clash[1], reason))
    kept.sort(key=lambda k: (k[2].start_ms, k[2].id))
    return [(scope, item) for _, scope, item in kept], conflicts
