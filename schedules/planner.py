"""Turn programme items into per-scope manifests (foundation version).

A pure function: the same items and ``now`` always give the same manifest
content. Versions are assigned by the caller, which knows what it published.
"""

from __future__ import annotations

from schedules.manifest import WINDOW_MS, Item, Manifest


def plan_scope(scope: str, items: list[Item], now_ms: int, version: int = 1) -> Manifest:
    """The manifest of ``scope``: every item still playing or starting before now+48 h."""
    window_end = now_ms + WINDOW_MS
    chosen = sorted(
        (i for i in items if i.end_ms > now_ms and i.start_ms < window_end),
        key=lambda i: (i.start_ms, i.id),
    )
    return Manifest(
        scope=scope,
        version=version,
        generated_ms=now_ms,
        window_start_ms=now_ms,
        window_end_ms=window_end,
        items=chosen,
    )
